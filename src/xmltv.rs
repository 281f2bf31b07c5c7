//! XMLTV: a streaming reader that keeps only the programmes of channels we map, and
//! the writer of the merged guide. No IO of its own: `read` takes any async byte
//! source (an HTTP body, gunzipped or not), `render` returns bytes.
//!
//! Memory while reading is bounded by what is kept: the programmes of mapped channels
//! inside the time window, each stored as its already-serialized child elements.
//! A 200 MB guide of which we keep nothing costs a few kilobytes of buffer. A read
//! may also keep, up to a budget of bytes, the programmes of guide channels that a
//! plan decided after it could give (`read_sparing`, `ServiceGuide::rechoose`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};
use tokio::io::AsyncBufRead;

/// Programme children players read, in the order the XMLTV DTD requires them
/// (`tv_validate_file` checks it). Anything else is dropped.
const KEPT: &[&str] = &[
    "title",
    "sub-title",
    "desc",
    "date",
    "category",
    "icon",
    "episode-num",
    "previously-shown",
    "premiere",
    "new",
    "rating",
];

/// Kept children that are text, and are dropped when empty.
const TEXTUAL: &[&str] = &[
    "title",
    "sub-title",
    "desc",
    "date",
    "category",
    "episode-num",
];

/// `season.episode.part`, each `n` or `n/total`, zero-based, any of them empty.
fn valid_xmltv_ns(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
            let (n, total) = p.split_once('/').unwrap_or((&p, ""));
            n.bytes().all(|b| b.is_ascii_digit()) && total.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Guide channels taken from one guide at most (the largest real guides list some tens
/// of thousands): one listing millions, under its size cap, took gigabytes to read and
/// match. The rest, and their programmes, are left out and counted as skipped.
pub const MAX_GUIDE_CHANNELS: usize = 100_000;

/// Programmes kept per channel at most, within the guide's days (a real channel has a
/// few dozen a day): a guide listing millions for one channel must not fill memory.
pub const MAX_PER_CHANNEL: usize = 10_000;

/// One programme, ready to write: times in UTC seconds, children as XML.
#[derive(Debug, Clone, PartialEq)]
pub struct Programme {
    pub start: i64,
    pub stop: Option<i64>,
    /// `(position in KEPT, serialized element)`, in document order.
    pub children: Vec<(u8, Box<str>)>,
    pub title: Box<str>,
    pub sub_title: Option<Box<str>>,
}

impl Programme {
    /// About the memory it takes.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.title.len()
            + self.sub_title.as_ref().map_or(0, |s| s.len())
            + self
                .children
                .iter()
                .map(|(_, c)| c.len() + std::mem::size_of::<(u8, Box<str>)>())
                .sum::<usize>()
    }

    /// The `lang` of its first `<title>` (`None` without one).
    pub fn lang(&self) -> Option<&str> {
        let (_, xml) = self
            .children
            .iter()
            .find(|(i, _)| KEPT[*i as usize] == "title")?;
        let start_tag = xml.split_once('>')?.0;
        let (quote, rest) = [" lang=\"", " lang='"]
            .iter()
            .find_map(|a| Some((a.chars().last()?, start_tag.split_once(a)?.1)))?;
        let lang = rest.split(quote).next()?;
        (!lang.is_empty()).then_some(lang)
    }

    /// The text of its first `<desc>`, unescaped (`None` without one).
    pub fn desc(&self) -> Option<String> {
        let (_, xml) = self
            .children
            .iter()
            .find(|(i, _)| KEPT[*i as usize] == "desc")?;
        let inner = xml.split_once('>')?.1;
        let inner = inner.rsplit_once("</").map_or(inner, |(text, _)| text);
        Some(
            quick_xml::escape::unescape(inner)
                .map(|t| t.into_owned())
                .unwrap_or_else(|_| inner.to_string()),
        )
    }
}

/// How a guide channel matched one of our channels; a better match is greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// A display name equal to ours once both are normalised.
    NormalisedName,
    /// A display name equal to ours as written.
    ExactName,
    /// Given to the channel by guide matching (an admin's pick, or the matcher).
    Chosen,
    /// The guide channel's id is one we know the channel by (the tvg-id its service
    /// lists it under).
    Id,
    /// The guide channel's id is the channel's guide id, which a mapping may set
    /// (what such a match is worth once it has: `guide::now_by`).
    GuideId,
}

impl Match {
    /// A match by display name (as written or normalised).
    pub fn by_name(self) -> bool {
        matches!(self, Match::ExactName | Match::NormalisedName)
    }

    /// A match by id (the service's tvg-id or the channel's guide id).
    pub fn by_id(self) -> bool {
        matches!(self, Match::Id | Match::GuideId)
    }
}

/// What one guide gave, keyed by what the `ChannelMap` returned (the lineup channel id).
/// Each of our channels takes the programmes of one guide channel only: a guide that
/// lists a channel under several ids (regional feeds, SD and HD copies) would else
/// pour overlapping programmes into it.
#[derive(Debug, Default, Clone)]
pub struct ServiceGuide {
    pub programmes: HashMap<String, Vec<Programme>>,
    /// How the guide channel each of our channels took matched it.
    pub matched_by: HashMap<String, Match>,
    /// The guide channel (its XMLTV id) each of our channels took.
    pub matched_ids: HashMap<String, String>,
    /// Every `<channel>` of the guide: (id, display names), in document order. Guide
    /// matching looks for lineup channels without programmes among them.
    pub catalogue: Vec<(String, Vec<String>)>,
    /// The language of catalogue channels whose display name says one
    /// (`<display-name lang="fr">`; the first that does): guide matching reads the same
    /// name in guides of two languages as, possibly, two channels.
    pub langs: HashMap<String, String>,
    /// The first `<icon src>` of catalogue channels that give one (a web link): a
    /// lineup channel without a logo of its own shows its guide channel's.
    pub icons: HashMap<String, String>,
    /// Our channels that a guide channel matched.
    pub channels_matched: usize,
    /// Guide channels that matched one of our channels another guide channel of this
    /// guide matched better (or as well, listed earlier): their programmes are dropped.
    pub ignored_duplicates: usize,
    /// Programmes dropped for bad data (a bad time, no title), with the first reason.
    pub skipped: usize,
    pub first_skip: Option<String>,
    /// What the read kept besides for a later plan (`rechoose`), empty unless read
    /// with a budget; the caller takes it out to keep it apart.
    pub spare: Spare,
    /// Guide channels offered without a display name (a `<channel>` without one, or
    /// only named by its programmes), in the order first seen: `rechoose` offers them
    /// after the catalogue.
    unnamed: Vec<String>,
    /// `catalogue`'s positions by lowercase id, made at the first `names_of`.
    catalogue_at: std::sync::OnceLock<HashMap<String, usize>>,
}

impl ServiceGuide {
    pub fn programme_count(&self) -> usize {
        self.programmes.values().map(Vec::len).sum()
    }

    /// The display names of catalogue channel `id` (case ignored, as ids are matched).
    pub fn names_of(&self, id: &str) -> Option<&[String]> {
        let at = self.catalogue_at.get_or_init(|| {
            let mut at = HashMap::with_capacity(self.catalogue.len());
            for (i, (id, _)) in self.catalogue.iter().enumerate() {
                at.entry(id.to_lowercase()).or_insert(i);
            }
            at
        });
        Some(&self.catalogue[*at.get(&id.to_lowercase())?].1)
    }

    /// Guide channels (ids) the read saw without a display name, which only an id
    /// matches: not in the catalogue.
    pub fn unnamed(&self) -> &[String] {
        &self.unnamed
    }

    /// The guide channels a read of the same document with `map` (a plan decided
    /// after this read: other guide channels assigned) would give our channels, when
    /// what this read kept and `spare` (what it kept besides) hold all their
    /// programmes; `None` when one of them was neither mapped nor spared, or lost
    /// programmes to the spare's budget (then only a read will do). Guide channels
    /// are offered in catalogue order, then the unnamed ones: a tie between two guide
    /// channels listed after programmes may go the other way than in the read.
    pub fn rechoose(&self, spare: &Spare, map: &dyn ChannelMap) -> Option<Rechosen> {
        let mut counts = ServiceGuide::default();
        let mut choice = Choice::default();
        for (id, names) in &self.catalogue {
            choice.offer(id, names, map, &mut counts);
        }
        for id in &self.unnamed {
            choice.offer(id, &[], map, &mut counts);
        }
        let kept: HashSet<&str> = self.matched_ids.values().map(String::as_str).collect();
        let whole =
            |id: &str| !spare.lost.contains(id) && (kept.contains(id) || spare.wanted.contains(id));
        choice
            .taken
            .values()
            .all(|(_, id)| whole(id))
            .then_some(Rechosen { choice, counts })
    }

    /// Becomes what that read would have kept (`rechoose`), moving the programmes
    /// from what this read kept and from `spare`.
    pub fn apply(&mut self, spare: Spare, rechosen: Rechosen) {
        let Rechosen {
            choice,
            counts: mut out,
        } = rechosen;
        let mut by_guide = spare.programmes;
        for (ours, programmes) in self.programmes.drain() {
            if let Some(id) = self.matched_ids.get(&ours) {
                by_guide.insert(id.clone(), programmes);
            }
        }
        for (ours, (_, id)) in &choice.taken {
            if let Some(programmes) = by_guide.remove(id) {
                out.programmes.insert(ours.clone(), programmes);
            }
        }
        out.catalogue = std::mem::take(&mut self.catalogue);
        out.langs = std::mem::take(&mut self.langs);
        out.icons = std::mem::take(&mut self.icons);
        out.skipped = self.skipped;
        out.first_skip = self.first_skip.take();
        finish(choice, &mut out);
        *self = out;
    }
}

/// A choice of guide channels made again (`ServiceGuide::rechoose`), to `apply`.
pub struct Rechosen {
    choice: Choice,
    /// What the choice counted (ignored duplicates) and saw (unnamed channels).
    counts: ServiceGuide,
}

/// The programmes a read keeps besides those of our channels: of guide channels the
/// map gave none of ours but may give later (`ChannelMap::spare`), by guide channel
/// id, up to `budget` bytes (as `Programme::bytes` counts them). Not those of guide
/// channels that matched one of ours another one took (SD and HD copies): a plan
/// that needs them needs a read.
#[derive(Debug, Default, Clone)]
pub struct Spare {
    programmes: HashMap<String, Vec<Programme>>,
    /// Guide channels whose programmes (in the window) are all kept here, unless
    /// `lost`.
    wanted: HashSet<String>,
    /// Guide channels that lost programmes to the budget.
    lost: HashSet<String>,
    bytes: usize,
    budget: usize,
}

impl Spare {
    /// Whether the spare keeps guide channel `id`'s programmes.
    fn wants(&self, id: &str) -> bool {
        self.budget > 0 && self.wanted.contains(id)
    }

    fn keep(&mut self, id: &str, p: Programme) {
        let size = p.bytes();
        if self.bytes + size > self.budget {
            self.lost.insert(id.to_string());
            return;
        }
        self.bytes += size;
        self.programmes.entry(id.to_string()).or_default().push(p);
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Maps a guide's channel (its id and display names) to one of our channels, saying
/// how it matched.
pub trait ChannelMap: Sync {
    fn map(&self, xml_id: &str, names: &[String]) -> Option<(String, Match)>;

    /// The country of guide channel `xml_id` (named `names`), when known. When guide
    /// channels of two countries match one of our channels by display name, the name
    /// does not say which one it is: none of them takes it by name (a match by id or
    /// a chosen one still does). `None` (the default): never known.
    fn country(&self, _xml_id: &str, _names: &[String]) -> Option<String> {
        None
    }

    /// Whether a read with a spare budget (`read_sparing`) keeps the programmes of
    /// guide channel `xml_id`, which `map` gave none of our channels: one that a plan
    /// decided after the read may give. `false` (the default): never.
    fn spare(&self, _xml_id: &str, _names: &[String]) -> bool {
        false
    }
}

/// Which guide channel each of our channels takes, decided as the guide's channels are
/// read: the best match, the first listed among equals.
#[derive(Default)]
struct Choice {
    /// Guide channel id → our id, for every guide channel seen (`None`: not ours).
    ids: HashMap<String, Option<String>>,
    /// Our id → (how, guide channel id) of the guide channel it takes.
    taken: HashMap<String, (Match, String)>,
    /// Our id → the country of the guide channels that matched it by display name so
    /// far (the first known one).
    name_country: HashMap<String, String>,
    /// Our channels that guide channels of different countries matched by display
    /// name: no display name takes them.
    split: HashSet<String>,
}

impl Choice {
    /// Maps guide channel `id` the first time it is seen, and lets it take our
    /// channel when it matches better than the one taken so far. With a spare budget,
    /// notes whether its programmes are wanted besides (`Spare`).
    fn offer(&mut self, id: &str, names: &[String], map: &dyn ChannelMap, out: &mut ServiceGuide) {
        if self.ids.contains_key(id) {
            return;
        }
        if self.ids.len() >= MAX_GUIDE_CHANNELS {
            out.skipped += 1;
            out.first_skip.get_or_insert_with(|| {
                format!(
                    "the guide lists more than {MAX_GUIDE_CHANNELS} channels; the rest and their programmes are left out"
                )
            });
            return;
        }
        if names.is_empty() {
            out.unnamed.push(id.to_string());
        }
        let mapped = map.map(id, names);
        if out.spare.budget > 0 && mapped.is_none() && map.spare(id, names) {
            out.spare.wanted.insert(id.to_string());
        }
        let mapped = match mapped {
            Some((ours, how)) if how.by_name() => self
                .by_name(id, names, map, out, ours)
                .map(|ours| (ours, how)),
            other => other,
        };
        self.ids.insert(
            id.to_string(),
            mapped.as_ref().map(|(ours, _)| ours.clone()),
        );
        let Some((ours, how)) = mapped else { return };
        match self.taken.get(&ours) {
            Some((held, _)) if *held >= how => out.ignored_duplicates += 1,
            held => {
                if held.is_some() {
                    out.ignored_duplicates += 1;
                    // Only a guide that lists channels after their programmes has
                    // programmes of the replaced channel here.
                    out.programmes.remove(&ours);
                }
                self.taken.insert(ours, (how, id.to_string()));
            }
        }
    }

    /// Whether guide channel `id` may take `ours` by display name: not when guide
    /// channels of two countries matched it by name (then the one that took it by
    /// name, if any, gives it up, with the programmes it gave).
    fn by_name(
        &mut self,
        id: &str,
        names: &[String],
        map: &dyn ChannelMap,
        out: &mut ServiceGuide,
        ours: String,
    ) -> Option<String> {
        if self.split.contains(&ours) {
            return None;
        }
        let Some(country) = map.country(id, names) else {
            return Some(ours);
        };
        let first = self
            .name_country
            .entry(ours.clone())
            .or_insert_with(|| country.clone());
        if *first == country {
            return Some(ours);
        }
        if self.taken.get(&ours).is_some_and(|(how, _)| how.by_name()) {
            self.taken.remove(&ours);
            out.programmes.remove(&ours);
        }
        self.split.insert(ours);
        None
    }

    /// Our channel whose programmes guide channel `id` gives, if it is the one taken.
    fn owner(&self, id: &str) -> Option<&String> {
        let ours = self.ids.get(id)?.as_ref()?;
        let (_, taken) = self.taken.get(ours)?;
        (taken == id).then_some(ours)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XmltvError {
    #[error("not XMLTV: {0}")]
    Malformed(String),
    #[error("not XMLTV: the root element is <{0}>, not <tv>")]
    NotTv(String),
    #[error("the guide ended early (truncated?) inside <{0}>")]
    Truncated(String),
    /// The reader stopped the guide at its size cap: said as such, not as the broken
    /// XML the cut leaves (a tag not closed, an element not ended).
    #[error("{0}")]
    TooLarge(TooLarge),
}

/// Raised inside an `io::Error` by a reader that stops a guide at a size cap
/// (`guide::open`), so that the read reports the cap ([`XmltvError::TooLarge`]).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error(
    "the guide is larger than the cap of {cap} bytes{}",
    if *.decompressed { " once decompressed" } else { "" }
)]
pub struct TooLarge {
    /// The cap, in bytes read (decompressed ones for a gzipped guide).
    pub cap: u64,
    /// The guide was gzipped: its cap counts what it unpacks to.
    pub decompressed: bool,
}

/// The cap a reader's error says the guide hit, if that is what it is.
fn too_large(e: &std::io::Error) -> Option<TooLarge> {
    e.get_ref()?.downcast_ref::<TooLarge>().copied()
}

/// A byte source decoded to UTF-8 as it is read.
type Transcoded<'a> = tokio_util::io::StreamReader<
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'a>>,
    bytes::Bytes,
>;

/// `source` as UTF-8, which is what the reader and every kept programme are: a guide
/// in another encoding (a UTF-16 byte-order mark, or an XML declaration naming one:
/// ISO-8859-1, Windows-1252...) is decoded as it is read; UTF-8, or no declaration,
/// passes as it is.
async fn as_utf8<'a, R: AsyncBufRead + Unpin + Send + 'a>(
    mut source: R,
) -> std::io::Result<tokio_util::either::Either<R, Transcoded<'a>>> {
    use futures::StreamExt;
    use tokio::io::AsyncBufReadExt;
    let Some(encoding) = declared_encoding(source.fill_buf().await?) else {
        return Ok(tokio_util::either::Either::Left(source));
    };
    let decoder = encoding.new_decoder_with_bom_removal();
    let chunks = futures::stream::unfold(Some((source, decoder)), |state| async move {
        let (mut source, mut decoder) = state?;
        let chunk = match source.fill_buf().await {
            Ok(b) => b.to_vec(),
            Err(e) => return Some((Err(e), None)),
        };
        source.consume(chunk.len());
        let last = chunk.is_empty();
        let room = decoder
            .max_utf8_buffer_length(chunk.len())
            .unwrap_or(chunk.len().saturating_mul(3) + 16);
        let mut out = String::with_capacity(room);
        // Bytes that mean nothing in the encoding become U+FFFD, as a browser shows them.
        let _ = decoder.decode_to_string(&chunk, &mut out, last);
        let next = (!last).then_some((source, decoder));
        Some((Ok(bytes::Bytes::from(out)), next))
    });
    Ok(tokio_util::either::Either::Right(
        tokio_util::io::StreamReader::new(chunks.boxed()),
    ))
}

/// The encoding the first bytes of an XML document say it is in, when not UTF-8: a
/// UTF-16 byte-order mark, or `encoding="..."` in its declaration.
fn declared_encoding(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(head) {
        return (encoding != encoding_rs::UTF_8).then_some(encoding);
    }
    let head = &head[..head.len().min(512)];
    let decl = head.strip_prefix(b"<?xml")?;
    let end = decl.windows(2).position(|w| w == b"?>")?;
    let decl = &decl[..end];
    let at = decl.windows(8).position(|w| w == b"encoding")?;
    let rest = &decl[at + 8..];
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b"=")?
        .trim_ascii_start();
    let quote = *rest.first().filter(|q| matches!(q, b'"' | b'\''))?;
    let value = &rest[1..];
    let label = &value[..value.iter().position(|&b| b == quote)?];
    let encoding = encoding_rs::Encoding::for_label(label)?;
    // A declaration readable as ASCII cannot be UTF-16 (its bytes would be).
    (encoding != encoding_rs::UTF_8
        && encoding != encoding_rs::UTF_16LE
        && encoding != encoding_rs::UTF_16BE)
        .then_some(encoding)
}

/// Reads an XMLTV document as a stream, keeping programmes of mapped channels whose
/// time overlaps `[not_before, not_after)` (UTC seconds).
pub async fn read<R: AsyncBufRead + Unpin + Send>(
    source: R,
    map: &dyn ChannelMap,
    not_before: i64,
    not_after: i64,
) -> Result<ServiceGuide, XmltvError> {
    read_sparing(source, map, not_before, not_after, 0).await
}

/// `read`, also keeping in the guide's `spare`, up to `budget` bytes, the programmes
/// of guide channels a later plan may give (`ServiceGuide::rechoose`).
pub async fn read_sparing<R: AsyncBufRead + Unpin + Send>(
    source: R,
    map: &dyn ChannelMap,
    not_before: i64,
    not_after: i64,
    budget: usize,
) -> Result<ServiceGuide, XmltvError> {
    let source = as_utf8(source).await.map_err(|e| match too_large(&e) {
        Some(cap) => XmltvError::TooLarge(cap),
        None => XmltvError::Malformed(format!("cannot read: {e}")),
    })?;
    let mut reader = Reader::from_reader(source);
    reader.config_mut().trim_text(false);
    // The reader keeps the name of every open element (to check its end: a guide with
    // `<title>X</desc>` would be copied into ours as broken XML): an upstream's
    // `<a><a><a>...` took gigabytes. Depth is bounded here (`MAX_DEPTH`).
    let mut buf = Vec::new();
    let mut out = ServiceGuide::default();
    out.spare.budget = budget;
    let mut choice = Choice::default();
    // Ids in the catalogue: a `<channel>` listed after programmes that named its id
    // goes in too (matching by name, a pick, need it there).
    let mut catalogued: HashSet<String> = HashSet::new();
    let mut root_seen = false;
    let mut depth = 0usize;
    loop {
        // A guide read from memory (unpacked, buffered) never waits: without this, one
        // huge guide held every other guide read polled with it, and its own timeout.
        tokio::task::consume_budget().await;
        let ev = reader
            .read_event_into_async(&mut buf)
            .await
            .map_err(|e| malformed(&reader, e))?;
        match ev {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_string();
                if !root_seen {
                    if name != "tv" {
                        return Err(XmltvError::NotTv(name));
                    }
                    root_seen = true;
                    depth = 1;
                    buf.clear();
                    continue;
                }
                if depth != 1 {
                    depth += 1;
                    deep_enough(&reader, depth)?;
                    buf.clear();
                    continue;
                }
                let attrs = attributes(&e);
                buf.clear();
                match name.as_str() {
                    "channel" => {
                        let GuideChannel { names, lang, icon } =
                            read_channel(&mut reader, &mut buf).await?;
                        if let Some(id) = attr(&attrs, "id") {
                            if !names.is_empty()
                                && catalogued.len() < MAX_GUIDE_CHANNELS
                                && catalogued.insert(id.to_string())
                            {
                                out.catalogue.push((id.to_string(), names.clone()));
                                if let Some(lang) = lang {
                                    out.langs.insert(id.to_string(), lang);
                                }
                                if let Some(icon) = icon {
                                    out.icons.insert(id.to_string(), icon);
                                }
                            }
                            choice.offer(id, &names, map, &mut out);
                        }
                    }
                    "programme" => {
                        let channel = attr(&attrs, "channel").unwrap_or_default();
                        // A programme of a channel the guide never listed: its id
                        // alone can match.
                        choice.offer(channel, &[], map, &mut out);
                        let owner = choice.owner(channel).cloned();
                        if owner.is_none() && !out.spare.wants(channel) {
                            skip_element(&mut reader, &mut buf, "programme").await?;
                            continue;
                        }
                        let p = read_programme(&mut reader, &mut buf, &attrs).await?;
                        match (p, owner) {
                            (Ok(p), owner) => {
                                let end = p.stop.unwrap_or(p.start);
                                if end >= not_before && p.start < not_after {
                                    match owner {
                                        Some(ours) => {
                                            let kept = out.programmes.entry(ours).or_default();
                                            if kept.len() < MAX_PER_CHANNEL {
                                                kept.push(p);
                                            } else {
                                                out.skipped += 1;
                                                out.first_skip.get_or_insert_with(|| {
                                                    format!(
                                                        "guide channel `{channel}` has more than {MAX_PER_CHANNEL} programmes in the guide's days; the rest are dropped"
                                                    )
                                                });
                                            }
                                        }
                                        None => out.spare.keep(channel, p),
                                    }
                                }
                            }
                            (Err(reason), Some(_)) => {
                                out.skipped += 1;
                                out.first_skip.get_or_insert(reason);
                            }
                            (Err(_), None) => {}
                        }
                    }
                    other => {
                        let other = other.to_string();
                        skip_element(&mut reader, &mut buf, &other).await?;
                    }
                }
            }
            Event::Empty(e) if !root_seen => {
                let name = e.local_name().as_ref().to_string();
                if name == "tv" {
                    // `<tv/>`: a guide with nothing in it (found by fuzzing).
                    break;
                }
                return Err(XmltvError::NotTv(name));
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if root_seen && depth == 0 {
                    break;
                }
            }
            Event::Eof => {
                return Err(if root_seen {
                    XmltvError::Truncated("tv".into())
                } else {
                    XmltvError::Malformed("no <tv> element".into())
                });
            }
            _ => {}
        }
        buf.clear();
    }
    finish(choice, &mut out);
    Ok(out)
}

/// Sorts what `out` kept and records which guide channel each of our channels took.
fn finish(choice: Choice, out: &mut ServiceGuide) {
    // Two programmes of one channel starting at once (a guide listing a slot twice):
    // the first listed stays. Players key programmes by channel and start (Jellyfin),
    // and show one at a time.
    let mut twins = 0;
    for list in out
        .programmes
        .values_mut()
        .chain(out.spare.programmes.values_mut())
    {
        list.sort_by_key(|p| p.start);
        let before = list.len();
        list.dedup_by_key(|p| p.start);
        twins += before - list.len();
    }
    if twins > 0 {
        out.skipped += twins;
        out.first_skip.get_or_insert_with(|| {
            "two programmes of one channel start at the same time; the first listed is kept"
                .to_string()
        });
    }
    out.channels_matched = choice.taken.len();
    out.matched_ids = choice
        .taken
        .iter()
        .map(|(ours, (_, id))| (ours.clone(), id.clone()))
        .collect();
    out.matched_by = choice
        .taken
        .into_iter()
        .map(|(ours, (how, _))| (ours, how))
        .collect();
}

/// How deep a guide may nest elements: XMLTV needs four (`tv`, `programme`, `credits`,
/// `actor`); an upstream nesting deeper is broken or hostile.
const MAX_DEPTH: usize = 64;

fn deep_enough<R>(reader: &Reader<R>, depth: usize) -> Result<(), XmltvError> {
    if depth <= MAX_DEPTH {
        return Ok(());
    }
    Err(XmltvError::Malformed(format!(
        "elements nested more than {MAX_DEPTH} deep (near byte {}): not an XMLTV guide",
        reader.buffer_position()
    )))
}

fn malformed<R>(reader: &Reader<R>, e: quick_xml::Error) -> XmltvError {
    if let quick_xml::Error::Io(io) = &e {
        if let Some(cap) = too_large(io) {
            return XmltvError::TooLarge(cap);
        }
    }
    XmltvError::Malformed(format!("{e} (near byte {})", reader.buffer_position()))
}

fn attributes(e: &BytesStart<'_>) -> Vec<(String, String)> {
    e.attributes()
        .flatten()
        .filter_map(|a| {
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()?
                .into_owned();
            Some((
                a.key.local_name().as_ref().to_string(),
                xml_chars(&value).into_owned(),
            ))
        })
        .collect()
}

/// `s` without the characters XML 1.0 does not allow anywhere, escaped or not (C0
/// controls but tab, line feed and carriage return; U+FFFE, U+FFFF): one in a name or
/// title would make the whole merged guide invalid for every client. Nor DEL and the
/// C1 controls (U+007F-U+009F), which XML 1.0 allows but discourages: a NEL (U+0085)
/// ends a line for some readers, and `tv_validate_file` refuses a guide with one as
/// misencoded.
pub fn xml_chars(s: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| !matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{7F}'..='\u{9F}' | '\u{FFFE}' | '\u{FFFF}');
    if s.chars().all(allowed) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.chars().filter(|&c| allowed(c)).collect())
    }
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Skips to the end of the element whose start was just read.
async fn skip_element<R: AsyncBufRead + Unpin>(
    reader: &mut Reader<R>,
    buf: &mut Vec<u8>,
    name: &str,
) -> Result<(), XmltvError> {
    let mut depth = 1usize;
    loop {
        tokio::task::consume_budget().await;
        let ev = reader
            .read_event_into_async(buf)
            .await
            .map_err(|e| malformed(reader, e))?;
        match ev {
            Event::Start(_) => {
                depth += 1;
                deep_enough(reader, depth)?;
            }
            Event::End(_) => {
                depth -= 1;
                if depth == 0 {
                    buf.clear();
                    return Ok(());
                }
            }
            Event::Eof => return Err(XmltvError::Truncated(name.into())),
            _ => {}
        }
        buf.clear();
    }
}

/// What a guide's `<channel>` says of itself.
struct GuideChannel {
    names: Vec<String>,
    /// The first language a display name gives (lowercase).
    lang: Option<String>,
    /// The first `<icon src>` that is a web link (at most `MAX_ICON_LINK` bytes).
    icon: Option<String>,
}

/// An icon link longer than this is not kept (a `data:` image, junk).
const MAX_ICON_LINK: usize = 2048;

/// The `<channel>` whose start was just read.
async fn read_channel<R: AsyncBufRead + Unpin>(
    reader: &mut Reader<R>,
    buf: &mut Vec<u8>,
) -> Result<GuideChannel, XmltvError> {
    let mut names = Vec::new();
    let mut lang: Option<String> = None;
    let mut icon: Option<String> = None;
    let mut take_icon = |e: &BytesStart<'_>, depth: usize| {
        if depth == 2 && icon.is_none() && e.local_name().as_ref() == "icon" {
            icon = attr(&attributes(e), "src")
                .map(str::trim)
                .filter(|s| s.len() <= MAX_ICON_LINK)
                .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
                .map(str::to_string);
        }
    };
    let mut depth = 1usize;
    let mut in_name = false;
    let mut text = String::new();
    loop {
        tokio::task::consume_budget().await;
        let ev = reader
            .read_event_into_async(buf)
            .await
            .map_err(|e| malformed(reader, e))?;
        match ev {
            Event::Start(e) => {
                depth += 1;
                deep_enough(reader, depth)?;
                take_icon(&e, depth);
                in_name = depth == 2 && e.local_name().as_ref() == "display-name";
                if in_name && lang.is_none() {
                    lang = attr(&attributes(&e), "lang")
                        .map(|l| l.trim().to_ascii_lowercase())
                        .filter(|l| !l.is_empty() && l.len() <= 16);
                }
                text.clear();
            }
            Event::Text(t) if in_name => text.push_str(&unescaped(&t)),
            Event::GeneralRef(r) if in_name => {
                if let Some(c) = resolve_ref(&r) {
                    text.push(c);
                }
            }
            Event::CData(c) if in_name => text.push_str(&c.xml10_content()),
            Event::End(_) => {
                if in_name && !text.trim().is_empty() {
                    names.push(text.trim().to_string());
                }
                in_name = false;
                depth -= 1;
                if depth == 0 {
                    buf.clear();
                    return Ok(GuideChannel { names, lang, icon });
                }
            }
            Event::Empty(e) => take_icon(&e, depth + 1),
            Event::Eof => return Err(XmltvError::Truncated("channel".into())),
            _ => {}
        }
        buf.clear();
    }
}

fn unescaped(t: &BytesText<'_>) -> String {
    let raw = t.xml10_content();
    let text = quick_xml::escape::unescape(&raw)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| raw.into_owned());
    match xml_chars(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(clean) => clean,
    }
}

/// `&amp;` and friends, and `&#...;`; other entities (undeclared in XMLTV) are dropped.
fn resolve_ref(r: &quick_xml::events::BytesRef<'_>) -> Option<char> {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        // `&#1;` names a character XML cannot hold even escaped: dropped.
        return (xml_chars(c.encode_utf8(&mut [0; 4])).len() == c.len_utf8()).then_some(c);
    }
    match r.xml10_content().as_ref() {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

/// A `<programme>` whose start was just read: `Ok(Err(reason))` when its data is bad
/// (it is skipped, the guide is not).
async fn read_programme<R: AsyncBufRead + Unpin>(
    reader: &mut Reader<R>,
    buf: &mut Vec<u8>,
    attrs: &[(String, String)],
) -> Result<Result<Programme, String>, XmltvError> {
    let mut children: Vec<(u8, Box<str>)> = Vec::new();
    let mut title = String::new();
    let mut sub_title: Option<String> = None;
    let mut depth = 1usize;
    // The child being copied: its KEPT position, writer, and plain text (for titles).
    let mut current: Option<(u8, Writer<Vec<u8>>, String)> = None;
    loop {
        tokio::task::consume_budget().await;
        let ev = reader
            .read_event_into_async(buf)
            .await
            .map_err(|e| malformed(reader, e))?;
        match ev {
            Event::Eof => return Err(XmltvError::Truncated("programme".into())),
            Event::Start(e) => {
                depth += 1;
                deep_enough(reader, depth)?;
                if depth == 2 {
                    let name = e.local_name().as_ref().to_string();
                    current = KEPT.iter().position(|k| *k == name).map(|i| {
                        let mut w = Writer::new(Vec::new());
                        let _ = w.write_event(Event::Start(clean_start(&e)));
                        (i as u8, w, String::new())
                    });
                } else if let Some((_, w, _)) = current.as_mut() {
                    let _ = w.write_event(Event::Start(clean_start(&e)));
                }
            }
            Event::Empty(e) => {
                if depth == 1 {
                    let name = e.local_name().as_ref().to_string();
                    if let Some(i) = KEPT.iter().position(|k| *k == name) {
                        let mut w = Writer::new(Vec::new());
                        let _ = w.write_event(Event::Empty(clean_start(&e)));
                        children.push((i as u8, into_str(w)));
                    }
                } else if let Some((_, w, _)) = current.as_mut() {
                    let _ = w.write_event(Event::Empty(clean_start(&e)));
                }
            }
            Event::Text(t) => {
                if let Some((_, w, text)) = current.as_mut() {
                    let s = unescaped(&t);
                    let _ = w.write_event(Event::Text(BytesText::new(&s)));
                    text.push_str(&s);
                }
            }
            Event::CData(c) => {
                if let Some((_, w, text)) = current.as_mut() {
                    let s = xml_chars(&c.xml10_content()).into_owned();
                    let _ = w.write_event(Event::Text(BytesText::new(&s)));
                    text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                if let (Some((_, w, text)), Some(c)) = (current.as_mut(), resolve_ref(&r)) {
                    let s = c.to_string();
                    let _ = w.write_event(Event::Text(BytesText::new(&s)));
                    text.push(c);
                }
            }
            Event::End(e) => {
                depth -= 1;
                if depth == 0 {
                    buf.clear();
                    break;
                }
                if let Some((_, w, _)) = current.as_mut() {
                    let name = xml_name(e.name().as_ref());
                    let _ = w.write_event(Event::End(BytesEnd::new(name)));
                }
                if depth == 1 {
                    if let Some((i, w, text)) = current.take() {
                        let kind = KEPT[i as usize];
                        let xml = into_str(w);
                        // tv_validate_file refuses empty texts and bad xmltv_ns numbers.
                        let empty = text.trim().is_empty() && TEXTUAL.contains(&kind);
                        let bad_ns = kind == "episode-num"
                            && xml.contains("xmltv_ns")
                            && !valid_xmltv_ns(&text);
                        if !empty && !bad_ns {
                            match kind {
                                "title" if title.is_empty() => title = text.trim().to_string(),
                                "sub-title" if sub_title.is_none() => {
                                    sub_title = Some(text.trim().to_string())
                                }
                                _ => {}
                            }
                            children.push((i, xml));
                        }
                    }
                }
            }
            _ => {}
        }
        buf.clear();
    }
    let start = match attr(attrs, "start").map(parse_time) {
        Some(Some(t)) => t,
        Some(None) => {
            return Ok(Err(format!(
                "bad start time `{}`",
                attr(attrs, "start").unwrap_or_default()
            )))
        }
        None => return Ok(Err("programme without a start time".into())),
    };
    let stop = match attr(attrs, "stop").map(parse_time) {
        Some(Some(t)) if t > start => Some(t),
        Some(Some(_)) => return Ok(Err("programme stops before it starts".into())),
        Some(None) => {
            return Ok(Err(format!(
                "bad stop time `{}`",
                attr(attrs, "stop").unwrap_or_default()
            )))
        }
        None => None,
    };
    if title.is_empty() {
        return Ok(Err("programme without a title".into()));
    }
    children.sort_by_key(|(i, _)| *i);
    Ok(Ok(Programme {
        start,
        stop,
        children,
        title: title.into(),
        sub_title: sub_title.filter(|s| !s.is_empty()).map(Into::into),
    }))
}

/// The element's start tag with its attributes re-escaped (no undeclared entities).
fn clean_start(e: &BytesStart<'_>) -> BytesStart<'static> {
    let mut out = BytesStart::new(xml_name(e.name().as_ref()));
    // The reader passes malformed attributes through (a key `"Quo`); written back they
    // made the merged guide invalid XML (found by fuzzing), so only names are kept.
    for (k, v) in attributes(e) {
        if is_xml_name(&k) {
            out.push_attribute((k.as_str(), v.as_str()));
        }
    }
    out
}

/// A name safe to write as an element name (see [`clean_start`]): characters that
/// cannot be in an XML name become `_`. Start and end tags get the same name.
fn xml_name(raw: &str) -> String {
    if is_xml_name(raw) {
        return raw.to_string();
    }
    let name: String = raw
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    match name.chars().next() {
        Some(c) if !c.is_ascii_digit() && c != '-' && c != '.' => name,
        _ => format!("_{name}"),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

fn is_xml_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':')
        && s.chars().all(is_name_char)
}

fn into_str(w: Writer<Vec<u8>>) -> Box<str> {
    String::from_utf8(w.into_inner())
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        .into()
}

/// An XMLTV time (`YYYYMMDDhhmmss +hhmm`; the offset, and trailing fields, optional)
/// as UTC seconds. The offset may also be `+hh:mm` or `+hh`, or a zone's abbreviation
/// as the XMLTV DTD's own example has it (`200007281733 BST`): one of `ZONES`. An
/// unknown or ambiguous one (`IST` is Indian, Irish or Israeli) is no time.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    let (digits, offset) = (&s[..end], s[end..].trim());
    if !(8..=14).contains(&digits.len()) {
        return None;
    }
    let mut full = digits.to_string();
    while full.len() < 14 {
        full.push('0');
    }
    let naive = NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%S").ok()?;
    Some(naive.and_utc().timestamp() - offset_seconds(offset)?)
}

/// Zone abbreviations an XMLTV time may end with, and their offsets in minutes: those
/// of Europe, North America and Australia that guides use. Not `CST`/`CDT` (US
/// Central, China, Cuba) nor `IST` (India, Ireland, Israel): a wrong time is worse
/// than none. `BST` is British Summer Time, as in the XMLTV DTD's own example.
const ZONES: &[(&str, i64)] = &[
    ("UTC", 0),
    ("UT", 0),
    ("GMT", 0),
    ("Z", 0),
    ("WET", 0),
    ("WEST", 60),
    ("BST", 60),
    ("CET", 60),
    ("CEST", 120),
    ("MET", 60),
    ("MEST", 120),
    ("EET", 120),
    ("EEST", 180),
    ("MSK", 180),
    ("EST", -300),
    ("EDT", -240),
    ("MST", -420),
    ("MDT", -360),
    ("PST", -480),
    ("PDT", -420),
    ("AKST", -540),
    ("AKDT", -480),
    ("HST", -600),
    ("AWST", 480),
    ("ACST", 570),
    ("ACDT", 630),
    ("AEST", 600),
    ("AEDT", 660),
    ("NZST", 720),
    ("NZDT", 780),
    ("JST", 540),
];

/// Seconds east of UTC of an XMLTV time's offset: none (UTC), `+hhmm`, `+hh:mm`,
/// `+hh`, or a zone in `ZONES` (any case).
fn offset_seconds(offset: &str) -> Option<i64> {
    if offset.is_empty() {
        return Some(0);
    }
    let (sign, hm) = match offset.as_bytes()[0] {
        b'+' => (1, &offset[1..]),
        b'-' => (-1, &offset[1..]),
        _ => {
            let (_, minutes) = ZONES.iter().find(|(z, _)| z.eq_ignore_ascii_case(offset))?;
            return Some(minutes * 60);
        }
    };
    let hm = match hm.len() {
        2 => format!("{hm}00"),
        5 if hm.as_bytes()[2] == b':' => format!("{}{}", &hm[..2], &hm[3..]),
        _ => hm.to_string(),
    };
    if hm.len() != 4 || !hm.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = hm[..2].parse().ok()?;
    let m: i64 = hm[2..].parse().ok()?;
    if h > 14 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// UTC seconds in XMLTV form, `YYYYMMDDhhmmss +0000`.
pub fn format_time(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%Y%m%d%H%M%S +0000")
        .to_string()
}

/// One channel of the merged guide.
pub struct OutChannel<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// The lineup number, written as a second `<display-name>` (Plex and Jellyfin map
    /// guide channels to tuner channels by it); 0 writes none.
    pub number: u32,
    pub logo: &'a str,
    pub programmes: &'a [Programme],
}

/// Writes the merged guide. `fold_subtitle` puts "Title - Sub-title" into the title
/// (Plex shows only titles).
pub fn render(channels: &[OutChannel<'_>], fold_subtitle: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4096 + channels
            .iter()
            .map(|c| 128 + c.programmes.len() * 256)
            .sum::<usize>(),
    );
    out.extend_from_slice(
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE tv SYSTEM \"xmltv.dtd\">\n<tv generator-info-name=\"freesky\">\n",
    );
    // tv_validate_file refuses a channel without programmes and a duplicate channel.
    let mut seen = std::collections::HashSet::new();
    let channels: Vec<&OutChannel<'_>> = channels
        .iter()
        .filter(|c| !c.programmes.is_empty() && seen.insert(c.id))
        .collect();
    for c in &channels {
        out.extend_from_slice(b"  <channel id=\"");
        push_escaped(&mut out, c.id);
        out.extend_from_slice(b"\">\n    <display-name>");
        push_escaped(&mut out, c.name);
        out.extend_from_slice(b"</display-name>\n");
        if c.number != 0 {
            out.extend_from_slice(b"    <display-name>");
            out.extend_from_slice(c.number.to_string().as_bytes());
            out.extend_from_slice(b"</display-name>\n");
        }
        if !c.logo.is_empty() {
            out.extend_from_slice(b"    <icon src=\"");
            push_escaped(&mut out, c.logo);
            out.extend_from_slice(b"\"/>\n");
        }
        out.extend_from_slice(b"  </channel>\n");
    }
    for c in &channels {
        for p in c.programmes {
            out.extend_from_slice(b"  <programme start=\"");
            out.extend_from_slice(format_time(p.start).as_bytes());
            if let Some(stop) = p.stop {
                out.extend_from_slice(b"\" stop=\"");
                out.extend_from_slice(format_time(stop).as_bytes());
            }
            out.extend_from_slice(b"\" channel=\"");
            push_escaped(&mut out, c.id);
            out.extend_from_slice(b"\">\n");
            let fold = fold_subtitle && p.sub_title.is_some();
            let mut titled = false;
            for (i, xml) in &p.children {
                let kind = KEPT[*i as usize];
                if fold && kind == "sub-title" {
                    continue;
                }
                if fold && kind == "title" {
                    if titled {
                        continue;
                    }
                    titled = true;
                    out.extend_from_slice(b"    <title>");
                    push_escaped(&mut out, &p.title);
                    out.extend_from_slice(b" - ");
                    push_escaped(&mut out, p.sub_title.as_deref().unwrap_or_default());
                    out.extend_from_slice(b"</title>\n");
                    continue;
                }
                out.extend_from_slice(b"    ");
                out.extend_from_slice(xml.as_bytes());
                out.push(b'\n');
            }
            out.extend_from_slice(b"  </programme>\n");
        }
    }
    out.extend_from_slice(b"</tv>\n");
    out
}

fn push_escaped(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(quick_xml::escape::escape(&*xml_chars(s)).as_bytes());
}

/// Placeholder programmes for a channel without guide data: `block`-second blocks
/// titled `title`, covering `[from, to)` aligned to the block.
pub fn placeholders(title: &str, from: i64, to: i64, block: i64) -> Vec<Programme> {
    let block = block.max(60);
    let mut t = from - from.rem_euclid(block);
    let mut out = Vec::new();
    let mut xml = Vec::new();
    push_escaped(&mut xml, title);
    let child: Box<str> = format!("<title>{}</title>", String::from_utf8_lossy(&xml)).into();
    while t < to {
        out.push(Programme {
            start: t,
            stop: Some(t + block),
            children: vec![(0, child.clone())],
            title: title.into(),
            sub_title: None,
        });
        t += block;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ById;
    impl ChannelMap for ById {
        fn map(&self, id: &str, names: &[String]) -> Option<(String, Match)> {
            if id == "one.example" {
                Some((format!("ours:{id}"), Match::Id))
            } else if names.iter().any(|n| n == "Two") {
                Some((format!("ours:{id}"), Match::ExactName))
            } else {
                None
            }
        }
    }

    async fn read_str(xml: &str) -> Result<ServiceGuide, XmltvError> {
        read(xml.as_bytes(), &ById, 0, i64::MAX).await
    }

    /// A slot listed twice for one channel is kept once (the first listed), and said.
    #[tokio::test]
    async fn programmes_of_one_channel_starting_at_once_are_kept_once() {
        let g = read_str(
            "<tv><channel id=\"one.example\"><display-name>One</display-name></channel>\
             <programme start=\"20261124183000 +0000\" channel=\"one.example\"><title>First</title></programme>\
             <programme start=\"20261124190000 +0000\" channel=\"one.example\"><title>Next</title></programme>\
             <programme start=\"20261124183000 +0000\" channel=\"one.example\"><title>Again</title></programme></tv>",
        )
        .await
        .unwrap();
        let kept = &g.programmes["ours:one.example"];
        let titles: Vec<&str> = kept.iter().map(|p| &*p.title).collect();
        assert_eq!(titles, ["First", "Next"]);
        assert_eq!(g.skipped, 1);
    }

    /// A `<channel>` listed after the programmes that name it is in the catalogue
    /// all the same (guide matching and picks look there).
    #[tokio::test]
    async fn a_channel_listed_after_its_programmes_is_in_the_catalogue() {
        let g = read_str(
            "<tv><programme start=\"20261124183000 +0000\" channel=\"late.example\"><title>P</title></programme>\
             <channel id=\"late.example\"><display-name>Late</display-name></channel></tv>",
        )
        .await
        .unwrap();
        assert_eq!(g.names_of("late.example"), Some(&["Late".to_string()][..]));
        assert_eq!(g.catalogue.len(), 1);
    }

    /// A guide listing more channels than `MAX_GUIDE_CHANNELS` keeps that many; the
    /// rest, and their programmes, are left out and said.
    #[tokio::test]
    async fn a_guide_of_too_many_channels_keeps_the_first_ones() {
        let mut xml = String::from("<tv>");
        for i in 0..MAX_GUIDE_CHANNELS + 3 {
            xml.push_str(&format!(
                "<channel id=\"c{i}\"><display-name>C{i}</display-name></channel>"
            ));
        }
        xml.push_str(
            "<programme start=\"20261124183000 +0000\" channel=\"one.example\"><title>P</title></programme></tv>",
        );
        let g = read_str(&xml).await.unwrap();
        assert_eq!(g.catalogue.len(), MAX_GUIDE_CHANNELS);
        assert_eq!(g.skipped, 4, "three channels and one programme");
        assert!(
            g.first_skip
                .as_deref()
                .unwrap()
                .contains("more than 100000 channels"),
            "{:?}",
            g.first_skip
        );
        assert_eq!(g.programme_count(), 0);
    }

    #[tokio::test]
    async fn a_guide_in_another_encoding_is_read_as_the_text_it_is() {
        let doc = |decl: &str| {
            format!(
                "{decl}<tv><channel id=\"one.example\"><display-name>Télé</display-name></channel>\
                 <programme start=\"20261124183000 +0000\" channel=\"one.example\"><title>Café crème</title></programme></tv>"
            )
        };
        let title = |g: &ServiceGuide| g.programmes["ours:one.example"][0].title.to_string();
        // ISO-8859-1 (read as Windows-1252, as browsers do), declared.
        let text = doc("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n");
        let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode(&text);
        assert!(std::str::from_utf8(&latin1).is_err(), "not UTF-8 bytes");
        let g = read(&latin1[..], &ById, 0, i64::MAX).await.unwrap();
        assert_eq!(title(&g), "Café crème");
        // UTF-16 with its byte-order mark, either way round.
        let text = doc("<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n");
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        for bytes in [le, be] {
            let g = read(&bytes[..], &ById, 0, i64::MAX).await.unwrap();
            assert_eq!(title(&g), "Café crème");
        }
        // UTF-8, declared or not, with or without its byte-order mark: as it is.
        for decl in ["", "<?xml version=\"1.0\" encoding='utf-8'?>", "\u{feff}"] {
            let g = read_str(&doc(decl)).await.unwrap();
            assert_eq!(title(&g), "Café crème");
        }
        assert_eq!(
            declared_encoding(b"<?xml version=\"1.0\" encoding = 'windows-1251' ?><tv/>"),
            Some(encoding_rs::WINDOWS_1251)
        );
        assert_eq!(
            declared_encoding(b"<?xml version=\"1.0\" encoding=\"nonsense\"?>"),
            None
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("20261124183000 +0000"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124193000 +0100"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124133000 -0500"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124183000"), Some(1_795_545_000));
        assert_eq!(parse_time("202611241830"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124183000+0000"), Some(1_795_545_000));
        // Zone names (the DTD's own example is `200007281733 BST`), `+hh:mm`, `+hh`.
        assert_eq!(parse_time("20261124183000 GMT"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124193000 BST"), Some(1_795_545_000));
        assert_eq!(parse_time("202611241930 bst"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124133000 EST"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124183000Z"), Some(1_795_545_000));
        assert_eq!(parse_time("20261125053000 AEDT"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124193000 +01:00"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124233000 +05:00"), Some(1_795_545_000));
        assert_eq!(parse_time("20261124133000 -05"), Some(1_795_545_000));
        for bad in [
            "",
            "2026",
            "yesterday",
            "20261324183000 +0000",
            "20261124183000 +99",
            "20261124183000 0100",
            "20261124183000 IST",
            "20261124183000 CST",
            "20261124183000 XYZ",
            "20261124183000 +1:00",
            "20261124183000 +01:0",
            "20261124183000 +1500",
            "2026112418300000",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(format_time(1_795_545_000), "20261124183000 +0000");
    }

    #[tokio::test]
    async fn characters_xml_cannot_hold_never_reach_the_merged_guide() {
        let g = read_str(
            "<tv><channel id=\"one.example\"><display-name>One</display-name></channel>\
             <programme start=\"20261124183000\" channel=\"one.example\">\
             <title lang=\"e\u{1}n\">ctrl &#1;&#x1b;&#x85;\u{2}\u{7f}\u{9f}x</title>\
             <desc><![CDATA[a\u{7}b]]></desc></programme></tv>",
        )
        .await
        .unwrap();
        let p = &g.programmes["ours:one.example"][0];
        assert_eq!(&*p.title, "ctrl x");
        let xml: Vec<&str> = p.children.iter().map(|(_, x)| &**x).collect();
        assert_eq!(
            xml,
            [r#"<title lang="en">ctrl x</title>"#, "<desc>ab</desc>"]
        );
        let out = render(
            &[OutChannel {
                number: 0,
                id: "a\u{0}b",
                name: "XML <tag> & ]]> \u{1}\u{2}\u{85} ctrl\u{1b}\u{80}",
                logo: "",
                programmes: std::slice::from_ref(p),
            }],
            false,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(
            !out.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
            "{out:?}"
        );
        assert!(
            out.contains("<display-name>XML &lt;tag&gt; &amp; ]]&gt;  ctrl</display-name>"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_channel_keeps_at_most_max_per_channel_programmes() {
        let mut xml = String::from(
            "<tv><channel id=\"one.example\"><display-name>One</display-name></channel>\n",
        );
        let start = parse_time("20261124000000").unwrap();
        for i in 0..MAX_PER_CHANNEL as i64 + 5 {
            let at = chrono::DateTime::from_timestamp(start + i * 60, 0).unwrap();
            xml.push_str(&format!(
                "<programme start=\"{} +0000\" channel=\"one.example\"><title>P{i}</title></programme>\n",
                at.format("%Y%m%d%H%M%S")
            ));
        }
        xml.push_str("</tv>");
        let g = read_str(&xml).await.unwrap();
        assert_eq!(g.programme_count(), MAX_PER_CHANNEL);
        assert_eq!(g.skipped, 5);
        assert!(
            g.first_skip
                .as_deref()
                .unwrap()
                .contains("more than 10000 programmes"),
            "{:?}",
            g.first_skip
        );
    }

    #[tokio::test]
    async fn keeps_mapped_programmes_in_dtd_order_and_drops_the_rest() {
        let g = read_str(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<tv>
  <channel id="one.example"><display-name>One</display-name></channel>
  <channel id="x"><display-name>Two</display-name></channel>
  <channel id="other"><display-name>Other</display-name></channel>
  <programme start="20261124183000 +0100" stop="20261124193000 +0100" channel="one.example">
    <category>News</category><title lang="en">A &amp; B</title><credits><actor>X</actor></credits>
    <desc>It&apos;s &lt;on&gt;</desc><sub-title>Part &#49;</sub-title><rating system="VCHIP"><value>TV-G</value></rating><new/>
  </programme>
  <programme start="20261124193000 +0100" channel="other"><title>Not ours</title></programme>
  <programme start="20261124193000 +0100" channel="x"><title>Two's</title></programme>
  <programme start="bad" channel="x"><title>Broken</title></programme>
</tv>"#,
        )
        .await
        .unwrap();
        assert_eq!(g.channels_matched, 2);
        assert_eq!(g.programme_count(), 2);
        assert_eq!(g.skipped, 1);
        assert_eq!(g.first_skip.as_deref(), Some("bad start time `bad`"));
        let p = &g.programmes["ours:one.example"][0];
        assert_eq!(p.start, parse_time("20261124173000").unwrap());
        assert_eq!(&*p.title, "A & B");
        assert_eq!(p.sub_title.as_deref(), Some("Part 1"));
        let xml: Vec<&str> = p.children.iter().map(|(_, x)| &**x).collect();
        assert_eq!(
            xml,
            [
                r#"<title lang="en">A &amp; B</title>"#,
                "<sub-title>Part 1</sub-title>",
                "<desc>It&apos;s &lt;on&gt;</desc>",
                "<category>News</category>",
                "<new/>",
                r#"<rating system="VCHIP"><value>TV-G</value></rating>"#,
            ]
        );
        assert_eq!(&*g.programmes["ours:x"][0].title, "Two's");
    }

    #[tokio::test]
    async fn a_long_read_from_memory_lets_its_timeout_and_other_reads_run() {
        // Read from memory, nothing ever waits: the read must still give the runtime
        // back now and then, or a timeout around it fires only when it is done (and
        // guide reads polled with it wait for it).
        let mut xml = String::from("<tv>");
        for i in 0..200_000 {
            xml.push_str(&format!(
                "<programme channel=\"c{i}\"><title>x</title></programme>"
            ));
        }
        xml.push_str("</tv>");
        let read = read(xml.as_bytes(), &ById, 0, i64::MAX);
        let timed = tokio::time::timeout(std::time::Duration::from_millis(5), read).await;
        assert!(timed.is_err(), "the timeout fired before the read ended");
    }

    #[tokio::test]
    async fn malformed_guides_are_errors() {
        for (xml, want) in [
            (
                "<tv><programme start=\"20261124183000\" channel=\"one.example\"><title>x",
                "truncated",
            ),
            ("<html><body>oops</body></html>", "not XMLTV"),
            ("", "not XMLTV"),
            ("<tv><channel id=\"a\"></tv>", "not XMLTV"),
            // A programme's end tags must match: its parts are copied into our guide.
            (
                "<tv><channel id=\"one.example\"><display-name>One</display-name></channel>\
                 <programme start=\"20261124183000\" channel=\"one.example\"><title>X</desc>\
                 </programme></tv>",
                "not XMLTV",
            ),
            // Nesting is bounded, at the top, in a skipped programme and in a kept one.
            (
                &format!("<tv>{}", "<a>".repeat(100_000)),
                "nested more than 64 deep",
            ),
            (
                &format!("<tv><programme channel=\"x\">{}", "<a>".repeat(100)),
                "nested more than 64 deep",
            ),
            (
                &format!(
                    "<tv><channel id=\"one.example\"><display-name>One</display-name></channel>\
                     <programme start=\"20261124183000\" channel=\"one.example\"><desc>{}",
                    "<a>".repeat(100)
                ),
                "nested more than 64 deep",
            ),
        ] {
            let err = read_str(xml).await.expect_err(xml).to_string();
            assert!(err.contains(want), "{xml}: {err}");
        }
        // An empty guide is a guide, not an error.
        let empty = read_str("<?xml version=\"1.0\"?>\n<tv/>").await.unwrap();
        assert_eq!(empty.programme_count(), 0);
    }

    #[tokio::test]
    async fn window_and_render_round_trip() {
        let xml = r#"<tv><channel id="one.example"/>
<programme start="20261124100000" stop="20261124110000" channel="one.example"><title>Old</title></programme>
<programme start="20261124180000" stop="20261124190000" channel="one.example"><title>Now</title><sub-title>Ep</sub-title></programme></tv>"#;
        let from = parse_time("20261124170000").unwrap();
        let g = read(xml.as_bytes(), &ById, from, i64::MAX).await.unwrap();
        let list = &g.programmes["ours:one.example"];
        assert_eq!(list.len(), 1);
        let chans = [OutChannel {
            number: 0,
            id: "one.example",
            name: "One & Co",
            logo: "http://l/1.png",
            programmes: list,
        }];
        let out = String::from_utf8(render(&chans, false)).unwrap();
        assert!(
            out.contains("<display-name>One &amp; Co</display-name>"),
            "{out}"
        );
        assert!(out.contains(r#"<programme start="20261124180000 +0000" stop="20261124190000 +0000" channel="one.example">"#), "{out}");
        assert!(out.contains("<sub-title>Ep</sub-title>"));
        let folded = String::from_utf8(render(&chans, true)).unwrap();
        assert!(folded.contains("<title>Now - Ep</title>"), "{folded}");
        assert!(!folded.contains("sub-title"));
        // What we write, we read back.
        struct Same;
        impl ChannelMap for Same {
            fn map(&self, id: &str, _: &[String]) -> Option<(String, Match)> {
                Some((id.to_string(), Match::Id))
            }
        }
        let again = read(out.as_bytes(), &Same, 0, i64::MAX).await.unwrap();
        assert_eq!(again.programmes["one.example"], *list);
    }

    /// "News" by id `news`, exactly by the name "News", or by a normalised "news".
    struct OneChannel;
    impl ChannelMap for OneChannel {
        fn map(&self, id: &str, names: &[String]) -> Option<(String, Match)> {
            let how = if id == "news" {
                Match::Id
            } else if names.iter().any(|n| n == "News") {
                Match::ExactName
            } else if names.iter().any(|n| n.eq_ignore_ascii_case("news")) {
                Match::NormalisedName
            } else {
                return None;
            };
            Some(("ours".into(), how))
        }
    }

    #[tokio::test]
    async fn a_channel_takes_the_programmes_of_one_guide_channel_the_best_match() {
        let prog = |ch: &str, title: &str| {
            format!("<programme start=\"20261124180000\" channel=\"{ch}\"><title>{title}</title></programme>")
        };
        let guide = |channels: &str, programmes: &[String]| {
            format!("<tv>{channels}{}</tv>", programmes.concat())
        };
        let all = [
            prog("lower", "normalised"),
            prog("exact-1", "exact 1"),
            prog("exact-2", "exact 2"),
            prog("news", "by id"),
        ];
        let titles = |g: &ServiceGuide| -> Vec<String> {
            g.programmes["ours"]
                .iter()
                .map(|p| p.title.to_string())
                .collect()
        };
        let names = "<channel id=\"lower\"><display-name>NEWS</display-name></channel>\
             <channel id=\"exact-1\"><display-name>News</display-name></channel>\
             <channel id=\"exact-2\"><display-name>News</display-name></channel>";
        // Names only: the exact one listed first.
        let g = read(guide(names, &all[..3]).as_bytes(), &OneChannel, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(titles(&g), ["exact 1"]);
        assert_eq!((g.channels_matched, g.ignored_duplicates), (1, 2));
        assert_eq!(g.matched_by["ours"], Match::ExactName);
        // An id listed last still wins.
        let with_id =
            format!("{names}<channel id=\"news\"><display-name>Other</display-name></channel>");
        let g = read(guide(&with_id, &all).as_bytes(), &OneChannel, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(titles(&g), ["by id"]);
        assert_eq!((g.channels_matched, g.ignored_duplicates), (1, 3));
        assert_eq!(g.matched_by["ours"], Match::Id);
        // Channels listed after programmes: the better one still replaces what was kept.
        let late = format!(
            "<tv><channel id=\"exact-1\"><display-name>News</display-name></channel>{}\
             <channel id=\"news\"/>{}</tv>",
            all[1], all[3]
        );
        let g = read(late.as_bytes(), &OneChannel, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(titles(&g), ["by id"]);
        assert_eq!((g.channels_matched, g.ignored_duplicates), (1, 1));
    }

    /// `OneChannel`, with a guide channel's country the part of its id after a dot.
    struct Countries;
    impl ChannelMap for Countries {
        fn map(&self, id: &str, names: &[String]) -> Option<(String, Match)> {
            OneChannel.map(id, names)
        }
        fn country(&self, id: &str, _: &[String]) -> Option<String> {
            Some(id.split_once('.')?.1.to_string())
        }
    }

    #[tokio::test]
    async fn a_name_guide_channels_of_two_countries_carry_takes_nothing_but_an_id_still_does() {
        let channel =
            |id: &str| format!("<channel id=\"{id}\"><display-name>News</display-name></channel>");
        let prog = |ch: &str| {
            format!("<programme start=\"20261124180000\" channel=\"{ch}\"><title>{ch}</title></programme>")
        };
        let read_str = |doc: String| async move {
            read(doc.as_bytes(), &Countries, 0, i64::MAX).await.unwrap()
        };
        // One country (or none known) besides: the first listed takes it.
        let g = read_str(format!(
            "<tv>{}{}{}{}{}</tv>",
            channel("a.us"),
            channel("b"),
            channel("c.us"),
            prog("a.us"),
            prog("c.us")
        ))
        .await;
        assert_eq!(g.matched_ids["ours"], "a.us");
        // Two countries: neither, nor the one of no known country; even when the
        // programmes came first.
        for doc in [
            format!(
                "<tv>{}{}{}{}</tv>",
                channel("b"),
                channel("a.us"),
                channel("a.ca"),
                prog("b")
            ),
            format!(
                "<tv>{}{}{}</tv>",
                channel("a.us"),
                prog("a.us"),
                channel("a.ca")
            ),
        ] {
            let g = read_str(doc.clone()).await;
            assert!(g.programmes.is_empty(), "{doc}: {:?}", g.programmes);
            assert!(g.matched_ids.is_empty(), "{doc}");
        }
        // An id match is not a name's: it stands.
        let g = read_str(format!(
            "<tv>{}{}{}{}</tv>",
            channel("a.us"),
            channel("a.ca"),
            "<channel id=\"news\"/>",
            prog("news")
        ))
        .await;
        assert_eq!(g.matched_by["ours"], Match::Id);
        assert_eq!(g.programmes["ours"].len(), 1);
    }

    /// Guide channels given by a plan (`Match::Chosen`); those whose id starts with
    /// `s` are worth sparing.
    struct Planned(&'static [(&'static str, &'static str)]);
    impl ChannelMap for Planned {
        fn map(&self, id: &str, _: &[String]) -> Option<(String, Match)> {
            let (_, ours) = self.0.iter().find(|(guide, _)| *guide == id)?;
            Some((ours.to_string(), Match::Chosen))
        }
        fn spare(&self, id: &str, _: &[String]) -> bool {
            id.starts_with('s')
        }
    }

    #[tokio::test]
    async fn a_later_plan_is_applied_from_what_the_read_kept_or_refused() {
        let doc = "<tv><channel id=\"a\"><display-name>A</display-name></channel>\
             <channel id=\"s1\"><display-name>S</display-name></channel>\
             <channel id=\"x\"><display-name>X</display-name></channel>\
             <programme start=\"20261124180000\" channel=\"a\"><title>a</title></programme>\
             <programme start=\"20261124180000\" channel=\"s1\"><title>s1</title></programme>\
             <programme start=\"20261124180000\" channel=\"x\"><title>x</title></programme></tv>";
        let read_with = |budget: usize| async move {
            read_sparing(doc.as_bytes(), &Planned(&[("a", "A")]), 0, i64::MAX, budget)
                .await
                .unwrap()
        };
        let titles = |g: &ServiceGuide| -> Vec<(String, String)> {
            let mut t: Vec<(String, String)> = g
                .programmes
                .iter()
                .flat_map(|(ours, ps)| ps.iter().map(|p| (ours.clone(), p.title.to_string())))
                .collect();
            t.sort();
            t
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        // Without a budget nothing is spared: only a plan the read had is applied.
        // The plan applied from what the read kept, if it can be.
        let remap = |g: &mut ServiceGuide, map: &Planned| {
            let spare = std::mem::take(&mut g.spare);
            match g.rechoose(&spare, map) {
                Some(r) => {
                    g.apply(spare, r);
                    true
                }
                None => false,
            }
        };
        let mut g = read_with(0).await;
        assert_eq!(g.spare.bytes(), 0);
        assert!(remap(&mut g, &Planned(&[("a", "B")])));
        assert_eq!(titles(&g), [pair("B", "a")], "taken from another channel");
        let mut g = read_with(0).await;
        assert!(!remap(&mut g, &Planned(&[("a", "A"), ("s1", "S")])));
        // With one: a spared guide channel is given, one not spared is not.
        let mut g = read_with(1 << 20).await;
        assert_eq!(titles(&g), [pair("A", "a")]);
        assert!(g.spare.bytes() > 0);
        assert!(remap(&mut g, &Planned(&[("a", "A"), ("s1", "S")])));
        assert_eq!(titles(&g), [pair("A", "a"), pair("S", "s1")]);
        assert_eq!(g.channels_matched, 2);
        let mut g = read_with(1 << 20).await;
        assert!(!remap(&mut g, &Planned(&[("x", "X")])));
        assert_eq!(titles(&g), [pair("A", "a")], "left as read");
        // A budget too small loses the spared programmes: that plan needs a read.
        let mut g = read_with(1).await;
        assert!(!remap(&mut g, &Planned(&[("a", "A"), ("s1", "S")])));
    }

    #[test]
    fn xmltv_ns_numbers() {
        for ok in ["0.1.", "1 . 2/10 . 0/1", "..", ".3."] {
            assert!(valid_xmltv_ns(ok), "{ok}");
        }
        for bad in ["S01E02", "1.2", "2.", "a.b.c", "1.2.3.4"] {
            assert!(!valid_xmltv_ns(bad), "{bad}");
        }
    }

    #[test]
    fn placeholder_blocks_cover_the_window() {
        let p = placeholders("News & Co", 3_700, 3 * 3600 + 1, 3600);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].start, 3600);
        assert_eq!(p[2].stop, Some(4 * 3600));
        assert_eq!(&*p[0].children[0].1, "<title>News &amp; Co</title>");
    }
}
