//! The matcher: an index of every guide channel's display names, and the scoring of
//! one lineup channel against it. Pure and deterministic: the same guide channels (in
//! the same order) and the same query give the same answer.
//!
//! Candidates come from an inverted index on normalised words (rare words first; a
//! word shared by more than `COMMON` names finds none) and from the whole spelling,
//! never from comparing every pair. A candidate is refused outright
//! when its time shift, its numbers, its callsign or its country (both known) differ
//! from the query's: "ITV +1" never matches "ITV", "Sky Sports 1" never "Sky Sports 2".
//! A guide channel's country is its name's trailing code, else the one its guide
//! gives it (its XMLTV id's domain).
//! The rest score 1.0 for the same words (spaces aside), else the IDF-weighted Dice
//! overlap of their words. A match needs `threshold` and a lead of `margin` over the
//! best candidate that is another channel: another name once normalised, or the same
//! name in the same guide, or in a guide channel of another country or language (a
//! name is not a channel: "ATV" is Turkish, Peruvian, Hungarian...). A name of three
//! letters or fewer, or of plain words and numbers only ("Canal 6"), matches only when
//! the lineup channel's country is known; with it, one guide's two listings of a
//! name under two languages are told apart by that country's languages
//! (`languages_of`). Without that country, a distinctive name
//! ("Red Bull TV") is one channel across guides of two languages or regions, as is a
//! name with a rare word that guides of four languages or more list ("Arirang"), and
//! "Pluto TV X" is also tried as "X" when X is long or rare enough (`probes`). Also
//! without it, the country its stream's address hints (`Query::urls`) is a weak
//! preference: among one name's guide channels of different languages or regions, the
//! one placed there or in its language; a short or plain name placed there matches.
//! Where that says nothing, so is a listing in a language of the script its name is
//! written in ("Рен ТВ": a Russian guide's, not a Hebrew one's "REN TV").

use std::collections::{HashMap, HashSet};

use super::features::{self, Features};

/// Names sharing a word above this count do not search by it while rarer words exist.
const COMMON: usize = 2_000;
/// Words that name no channel by themselves: a name made of these and numbers only
/// ("Canal 6", "2TV", "Kanal 11") is used by channels in many countries.
const GENERIC: &[&str] = &[
    "canal",
    "channel",
    "kanal",
    "kanali",
    "tv",
    "tele",
    "television",
    "televizija",
    "televisao",
    "televizyon",
    "telewizja",
    "televisione",
    "radio",
    "plus",
    "the",
];
/// Names this short (letters and digits, spaces aside: "ATV", "A2", "N4") are reused
/// by channels in many countries.
const SHORT: usize = 3;
/// Words of its own (`own_word`) a name without its platform ("Pluto TV Black Ink
/// Crew" → "Black Ink Crew") needs to be tried when no country is known.
const PLAIN_OWN_WORDS: usize = 3;
/// Or one that is rare: used by one name in this many or fewer (names spelled alike
/// counted once, `Index::spellings_of`). A frequency, not a count: in a few small
/// guides every word is rare, and the rules using it are off below this many names.
const RARE_ONE_IN: usize = 7_000;
/// Guides of this many languages listing one name, a rare word of its own among its
/// words ("Arirang", "CBeebies"), make it one channel carried abroad, not two
/// channels that happen to share a name ("Canal Rural" of Argentina and of Brazil:
/// two languages).
const INTERNATIONAL_LANGS: u32 = 4;
/// Alternatives kept per answer.
const ALTERNATIVES: usize = 5;

/// One guide channel as the matcher sees it.
#[derive(Debug, Clone)]
pub struct GuideChannel {
    /// The guide source (a service's name, or an extra guide's).
    pub source: String,
    /// Its XMLTV channel id.
    pub id: String,
    /// Its display names.
    pub names: Vec<String>,
    /// The country the guide gives it (its id's domain, `ATV.tr`; its source's
    /// country), lowercase, when known: a name shared by channels of two countries
    /// means two channels.
    pub country: Option<String>,
    /// The language of its display names, when the guide says one: the same name in
    /// guides of two languages is, as often as not, two channels.
    pub lang: Option<String>,
    /// The country its guide is made for (where it is watched, not where the channel
    /// is from: a UK guide lists Al Arabiya), when known. A lineup channel of that
    /// country prefers it; with the lineup channel's country unknown, the same name in
    /// guides of two regions is ambiguous.
    pub region: Option<String>,
}

/// What is known of one lineup channel.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Its name, then its sources' names.
    pub names: Vec<String>,
    /// Its upstream tvg-ids (`BBCOne.uk`): words and country.
    pub tvg_ids: Vec<String>,
    /// Its group ("UK | News"): a country.
    pub group: String,
    /// Its sources' stream addresses: a country-code domain (`videos.rtva.ad`) hints
    /// its country (`features::country_of_url`), weakly: a hint, never a country.
    pub urls: Vec<String>,
}

/// The settings the evaluation tunes.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub threshold: f32,
    /// The lead needed over the best other channel.
    pub margin: f32,
    /// The lead needed when the best has the same words as the lineup channel's name
    /// and the other channel does not.
    pub exact_margin: f32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            threshold: 0.9,
            margin: 0.15,
            exact_margin: 0.05,
        }
    }
}

/// One candidate of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Index of the guide channel in the list the index was built from.
    pub channel: usize,
    pub score: f32,
    /// The display name that scored.
    pub name: String,
}

/// The answer for one query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The match, when one is clearly right.
    pub chosen: Option<Scored>,
    /// The best candidates, best first (the chosen one included).
    pub alternatives: Vec<Scored>,
    /// Why: the score and the features that decided.
    pub reason: String,
    /// Unmatched because the best candidate is another lineup channel's already (by
    /// id, an admin's decision): that candidate.
    pub taken: Option<Scored>,
}

struct Name {
    channel: u32,
    /// Interned words, sorted, deduplicated.
    words: Box<[u32]>,
    /// Sum of the words' weights.
    weight: f32,
    compact: Box<str>,
    /// `compact` with quality marks kept (`Features::marked`).
    marked: Box<str>,
    /// Numbers among the words, sorted ("1", "24").
    numbers: Box<[u32]>,
    shift: u8,
    country: Option<Box<str>>,
    callsign: Option<Box<str>>,
    shown: Box<str>,
}

/// The index of every guide channel's names.
pub struct Index {
    names: Vec<Name>,
    words: HashMap<Box<str>, u32>,
    postings: Vec<Vec<u32>>,
    weights: Vec<f32>,
    by_compact: HashMap<Box<str>, Vec<u32>>,
    channels: usize,
    /// Each guide channel's source, interned: two channels of one guide with the
    /// same name are two channels (regional feeds), which makes the name ambiguous.
    source_of: Vec<u32>,
    /// Each interned word's spelling.
    spelling: Vec<Box<str>>,
    /// Each guide channel's country, when known.
    country_of: Vec<Option<Box<str>>>,
    /// Each guide channel's language, interned, when known.
    lang_of: Vec<Option<u32>>,
    /// Each guide channel's guide's region, when known.
    region_of: Vec<Option<Box<str>>>,
    /// Each interned word's count of names using it, names spelled alike
    /// (`compact`) counted once.
    spellings_of: Vec<u32>,
    /// Each name's count of guide languages listing it (names alike: same spelling
    /// and shift).
    langs_of_name: Vec<u32>,
    /// Each interned language's spelling (lowercase).
    lang_names: Vec<Box<str>>,
}

/// One query name, ready to compare.
struct Probe {
    words: Vec<Option<u32>>,
    weight: f32,
    compact: String,
    numbers: Vec<String>,
    shift: u8,
    country: Option<String>,
    callsign: Option<String>,
    /// The country the lineup channel's stream addresses hint, when its own is
    /// unknown.
    hint: Option<String>,
    /// The languages written in its name's script (`features::languages_of_script`),
    /// when its country is unknown: "Рен ТВ" is more likely a Russian guide's than a
    /// Hebrew one's.
    written: &'static [&'static str],
}

impl Index {
    /// Indexes `channels`' display names (a channel without names cannot match).
    pub fn new(channels: &[GuideChannel]) -> Self {
        let mut words: HashMap<Box<str>, u32> = HashMap::new();
        let mut postings: Vec<Vec<u32>> = Vec::new();
        let mut raw: Vec<(u32, Features, Box<str>)> = Vec::new();
        let mut sources: HashMap<&str, u32> = HashMap::new();
        let mut source_of = Vec::with_capacity(channels.len());
        let mut langs: HashMap<String, u32> = HashMap::new();
        let mut lang_of = Vec::with_capacity(channels.len());
        let mut country_of = Vec::with_capacity(channels.len());
        let mut region_of = Vec::with_capacity(channels.len());
        for (i, c) in channels.iter().enumerate() {
            region_of.push(
                c.region
                    .as_deref()
                    .map(|k| features::canonical_country(&k.to_ascii_lowercase()).into()),
            );
            let next = sources.len() as u32;
            source_of.push(*sources.entry(c.source.as_str()).or_insert(next));
            country_of.push(
                c.country
                    .as_deref()
                    .map(|k| features::canonical_country(&k.to_ascii_lowercase()).into()),
            );
            lang_of.push(c.lang.as_deref().map(|l| {
                let l = l.trim().to_ascii_lowercase();
                let next = langs.len() as u32;
                *langs.entry(l).or_insert(next)
            }));
            let mut seen = HashSet::new();
            for n in &c.names {
                let f = features::of_name_placed(n, country_of[i].as_deref());
                if f.words.is_empty() || !seen.insert((f.compact(), f.shift, f.country.clone())) {
                    continue;
                }
                raw.push((i as u32, f, n.as_str().into()));
            }
        }
        let mut names = Vec::with_capacity(raw.len());
        for (channel, f, shown) in raw {
            let id = names.len() as u32;
            let mut ids: Vec<u32> = f
                .words
                .iter()
                .map(|w| {
                    let next = words.len() as u32;
                    *words.entry(w.as_str().into()).or_insert_with(|| {
                        postings.push(Vec::new());
                        next
                    })
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            for &w in &ids {
                postings[w as usize].push(id);
            }
            let numbers = numbers_of(&f.words);
            names.push(Name {
                channel,
                words: ids.into(),
                weight: 0.0,
                compact: f.compact().into(),
                marked: f.marked().into(),
                numbers: numbers.iter().filter_map(|n| n.parse().ok()).collect(),
                shift: f.shift,
                country: f.country.map(Into::into),
                callsign: f.callsign.map(Into::into),
                shown,
            });
        }
        let total = names.len().max(1) as f32;
        let weights: Vec<f32> = postings
            .iter()
            .map(|p| (1.0 + total / p.len().max(1) as f32).ln())
            .collect();
        let mut by_compact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        for (i, n) in names.iter_mut().enumerate() {
            n.weight = n.words.iter().map(|&w| weights[w as usize]).sum();
            by_compact
                .entry(n.compact.clone())
                .or_default()
                .push(i as u32);
        }
        let spellings_of: Vec<u32> = postings
            .iter()
            .map(|p| {
                p.iter()
                    .map(|&n| &*names[n as usize].compact)
                    .collect::<HashSet<&str>>()
                    .len() as u32
            })
            .collect();
        let mut langs_by_spelling: HashMap<(&str, u8), HashSet<u32>> = HashMap::new();
        for n in &names {
            if let Some(l) = lang_of[n.channel as usize] {
                langs_by_spelling
                    .entry((&n.compact, n.shift))
                    .or_default()
                    .insert(l);
            }
        }
        let langs_of_name: Vec<u32> = names
            .iter()
            .map(|n| {
                langs_by_spelling
                    .get(&(&*n.compact, n.shift))
                    .map_or(0, |l| l.len() as u32)
            })
            .collect();
        drop(langs_by_spelling);
        let mut lang_names: Vec<Box<str>> = vec!["".into(); langs.len()];
        for (l, &i) in &langs {
            lang_names[i as usize] = l.as_str().into();
        }
        let mut spelling: Vec<Box<str>> = vec!["".into(); words.len()];
        for (w, &i) in &words {
            spelling[i as usize] = w.clone();
        }
        Self {
            names,
            spelling,
            words,
            postings,
            weights,
            by_compact,
            channels: channels.len(),
            source_of,
            country_of,
            lang_of,
            region_of,
            spellings_of,
            langs_of_name,
            lang_names,
        }
    }

    /// Guide channels indexed.
    pub fn len(&self) -> usize {
        self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.channels == 0
    }

    /// The best guide channels for `query`, skipping those in `taken` (by index), and
    /// the match when the best is above the threshold and clearly ahead.
    pub fn find(&self, query: &Query, taken: &HashSet<usize>, settings: Settings) -> Outcome {
        let mut best_taken: Option<(f32, u32)> = None;
        let mut out = self.find_untaken(query, taken, settings, &mut best_taken);
        // The best candidate is another channel's: say so, rather than why the rest
        // did not do.
        if let (None, Some((score, n))) = (&out.chosen, best_taken) {
            let rest = out.alternatives.first().map_or(0.0, |a| a.score);
            if score >= settings.threshold && score.min(1.0) > rest {
                let name = &self.names[n as usize];
                out.reason = format!(
                    "its best guide channel \"{}\" ({:.2}) is another lineup channel's; {}",
                    name.shown,
                    score.min(1.0),
                    out.reason
                );
                out.taken = Some(Scored {
                    channel: name.channel as usize,
                    score: score.min(1.0),
                    name: name.shown.to_string(),
                });
            }
        }
        out
    }

    /// The score `query` gives guide channel `channel` (its best name), as `find`
    /// scores candidates; `None` when a hard feature keeps them apart. For a channel
    /// an admin decided on: its score, though the decision took it from the matcher.
    pub fn score_of(&self, query: &Query, channel: usize) -> Option<f32> {
        let probes = self.probes(query);
        self.names
            .iter()
            .filter(|n| n.channel as usize == channel)
            .flat_map(|n| probes.iter().filter_map(move |p| self.score(p, n)))
            .reduce(f32::max)
            .map(|s| s.min(1.0))
    }

    fn find_untaken(
        &self,
        query: &Query,
        taken: &HashSet<usize>,
        settings: Settings,
        best_taken: &mut Option<(f32, u32)>,
    ) -> Outcome {
        let probes = self.probes(query);
        if probes.is_empty() {
            return Outcome {
                reason: "no name to match".into(),
                ..Outcome::default()
            };
        }
        let mut candidates: HashSet<u32> = HashSet::new();
        for p in &probes {
            if let Some(ids) = self.by_compact.get(p.compact.as_str()) {
                candidates.extend(ids);
            }
            let mut known: Vec<u32> = p.words.iter().flatten().copied().collect();
            known.sort_by_key(|&w| self.postings[w as usize].len());
            // A name made of common words only ("TV 1") finds candidates by its
            // whole spelling alone: no word of it could make a clear match.
            for &w in &known {
                let posting = &self.postings[w as usize];
                if posting.len() > COMMON {
                    break;
                }
                candidates.extend(posting);
            }
        }
        // Best score per guide channel.
        let mut best: HashMap<u32, (f32, u32)> = HashMap::new();
        for &n in &candidates {
            let name = &self.names[n as usize];
            let score = probes
                .iter()
                .filter_map(|p| self.score(p, name))
                .fold(None, |acc: Option<f32>, s| {
                    Some(acc.map_or(s, |a| a.max(s)))
                });
            let Some(score) = score else { continue };
            if taken.contains(&(name.channel as usize)) {
                if best_taken.is_none_or(|(s, _)| score > s) {
                    *best_taken = Some((score, n));
                }
                continue;
            }
            let entry = best.entry(name.channel).or_insert((score, n));
            if score > entry.0 || (score == entry.0 && n < entry.1) {
                *entry = (score, n);
            }
        }
        let mut ranked: Vec<(u32, f32, u32)> =
            best.into_iter().map(|(c, (s, n))| (c, s, n)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let alternatives: Vec<Scored> = ranked
            .iter()
            .take(ALTERNATIVES)
            .map(|&(c, s, n)| Scored {
                channel: c as usize,
                score: s.min(1.0),
                name: self.names[n as usize].shown.to_string(),
            })
            .collect();
        let Some(&(top, top_score, top_name)) = ranked.first() else {
            return Outcome {
                reason: self.why_none(&probes, &candidates),
                ..Outcome::default()
            };
        };
        let identity = |n: u32| {
            let name = &self.names[n as usize];
            (&*name.compact, name.shift)
        };
        let query_country = probes.iter().find_map(|p| p.country.as_deref());
        // With the lineup channel's country unknown, the one its stream's address
        // hints (`stream_country`): a guide channel placed there or in one of its
        // languages is preferred, never required.
        let hint = probes.iter().find_map(|p| p.hint.as_deref());
        // Then, where that says nothing, a guide listing in a language of its
        // name's script.
        let written = probes.first().map_or(&[][..], |p| p.written);
        let hinted = |c: u32, n: u32| {
            (
                hint.is_some_and(|h| {
                    self.placed_in(c, n, h) || self.speaks(c, languages_of(h)) == Some(true)
                }),
                self.speaks(c, written) == Some(true),
            )
        };
        // Another channel: another name; the same name given to a channel of another
        // country ("ATV" in Turkey and in Peru); the same name twice in one guide, as
        // written (regional feeds; "Band" and "Band HD" in one guide are one channel in
        // two qualities). With the lineup channel's country unknown, also the same name
        // in guides of two languages or of two regions, unless it is distinctive ("Red
        // Bull TV") or international (`Index::international`): nothing says which is
        // meant.
        // With it known, a guide channel of another country is no candidate at all,
        // and the same name in another guide is the same channel carried there.
        // The same name twice in one guide, under two languages, with the lineup
        // channel's country known: the one in a language of that country is its
        // channel, the other the guide's listing for another country ("Rai 4" in an
        // aggregator's German and Italian lists, for an Italian channel).
        // So, with none known, are they by the languages of the country the stream's
        // address hints.
        let spoken = query_country.or(hint).map_or(&[][..], languages_of);
        let fits = |c: u32| self.speaks(c, spoken);
        let twin = |c: u32, n: u32| {
            self.source_of[c as usize] == self.source_of[top as usize]
                && self.names[n as usize].marked == self.names[top_name as usize].marked
                && !matches!((fits(top), fits(c)), (Some(a), Some(b)) if a != b)
        };
        let runner = ranked.iter().skip(1).find(|&&(c, _, n)| {
            identity(n) != identity(top_name)
                || self.countries_differ(n, top_name)
                || twin(c, n)
                || (query_country.is_none()
                    && !self.distinctive(&self.names[top_name as usize])
                    && !self.international(top_name)
                    && self.conflict(c, top)
                    // Unless the stream's address hints the best's country or
                    // language, not this one's (or, hinting both or neither, the
                    // name's script the best's language, not this one's).
                    && hinted(top, top_name) <= hinted(c, n))
        });
        let why = self.why(&probes, &self.names[top_name as usize], top_score);
        let lead = runner.map_or(top_score, |r| top_score - r.1);
        let runner_text = runner.map_or_else(
            || "no other channel close".to_string(),
            |&(c, s, n)| {
                let why = if identity(n) != identity(top_name) {
                    ""
                } else if self.source_of[c as usize] == self.source_of[top as usize] {
                    ", the same name twice in one guide"
                } else if self.countries_differ(n, top_name) {
                    ", the same name in another country"
                } else {
                    ", the same name in a guide of another language"
                };
                format!(
                    "next other channel {:.2} (\"{}\"{why})",
                    s.min(1.0),
                    self.names[n as usize].shown
                )
            },
        );
        let top_n = &self.names[top_name as usize];
        let best = format!("best {:.2} (\"{}\")", top_score.min(1.0), top_n.shown);
        // A short or plain name needs the lineup channel's country, and then a guide
        // channel of that country or in a guide made for it: "Canal 6" of Honduras is
        // not the first "Canal 6" of a guide of nowhere in particular.
        let unplaced = self
            .generic(top_n)
            .then_some(query_country)
            .and_then(|qc| match qc {
                // Or the country its stream's address hints, when a guide places it
                // there.
                None if hint.is_some_and(|h| self.placed_in(top, top_name, h)) => None,
                None => Some("no country is known".to_string()),
                Some(qc) => (self.country(top_n) != Some(qc)
                    && self.region_of[top as usize].as_deref() != Some(qc))
                .then(|| format!("no guide places it in {qc}")),
            });
        let too_close = runner.is_some_and(|r| {
            // Exactly the channel's words against a runner-up without them: a smaller
            // lead will do.
            let exact = probes.iter().any(|p| p.compact == *top_n.compact)
                && !probes
                    .iter()
                    .any(|p| p.compact == *self.names[r.2 as usize].compact);
            lead < if exact {
                settings.exact_margin
            } else {
                settings.margin
            }
        });
        let refusal = if top_score < settings.threshold {
            Some(format!(
                "{best} is below the threshold {:.2}",
                settings.threshold
            ))
        } else if let Some(why_not) = unplaced {
            Some(format!(
                "{best} is a name channels of many countries use, and {why_not}"
            ))
        } else if too_close {
            Some(format!("ambiguous: {best} leads by {lead:.2} only"))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Outcome {
                chosen: None,
                alternatives,
                reason: format!("{refusal}; {runner_text}"),
                taken: None,
            };
        }
        // The twin in the country's language, when the best is the other one: the
        // runner-up check above let it pass for that (`twin`), whatever its score.
        let (top, top_n, top_score) = ranked
            .iter()
            .filter(|_| fits(top) == Some(false))
            .find(|&&(c, _, n)| {
                fits(c) == Some(true)
                    && identity(n) == identity(top_name)
                    && self.source_of[c as usize] == self.source_of[top as usize]
                    && self.names[n as usize].marked == top_n.marked
            })
            .map_or((top, top_n, top_score), |&(c, s, n)| {
                (c, &self.names[n as usize], s)
            });
        Outcome {
            chosen: Some(Scored {
                channel: top as usize,
                score: top_score.min(1.0),
                name: top_n.shown.to_string(),
            }),
            alternatives,
            reason: format!("{why}; {runner_text}"),
            taken: None,
        }
    }

    fn probes(&self, q: &Query) -> Vec<Probe> {
        let by_id: Vec<Features> = q
            .tvg_ids
            .iter()
            .filter_map(|t| features::of_tvg_id(t))
            .collect();
        // A tvg-id's domain, else a name's country prefix ("UK: 5 USA"), else the
        // group places the channel more surely than a name's trailing code: "5 USA" in
        // a "UK" group is a British channel.
        let placed = by_id
            .iter()
            .find_map(|f| f.country.clone())
            .or_else(|| {
                q.names
                    .iter()
                    .find_map(|n| Some(features::country_prefix(n)?.0))
            })
            .or_else(|| features::country_of_group(&q.group));
        let mut feats: Vec<Features> = q
            .names
            .iter()
            .map(|n| features::of_listed_name_placed(n, placed.as_deref()))
            .chain(by_id)
            .filter(|f| !f.words.is_empty())
            .collect();
        // What one name or id says holds for all: a country, a time shift, a callsign.
        let country = placed.or_else(|| feats.iter().find_map(|f| f.country.clone()));
        // "Pluto TV Forensic Files" is also "Forensic Files": a plainer name, tried
        // where the country is known (as a short name is), or where what is left has
        // three words of its own ("Black Ink Crew"), or one that few guide names use
        // ("Forensic Files", "Naruto"): "Classic Movies" of Pluto TV is not the
        // "Classic Movies" of a Hong Kong guide.
        let plain: Vec<Features> = q
            .names
            .iter()
            .filter_map(|n| features::without_platform(n))
            .map(features::of_name)
            .filter(|f| {
                !f.words.is_empty()
                    && (country.is_some() || {
                        let own = f.words.iter().filter(|w| own_word(w)).count();
                        let rare = f.words.iter().any(|w| {
                            own_word(w) && self.words.get(w.as_str()).is_some_and(|&i| self.rare(i))
                        });
                        own >= PLAIN_OWN_WORDS || rare
                    })
            })
            .collect();
        feats.extend(plain);
        let shift = feats.iter().map(|f| f.shift).max().unwrap_or(0);
        let hint = country.is_none().then(|| stream_country(q)).flatten();
        let written = match (&country, q.names.first()) {
            (None, Some(n)) => features::languages_of_script(n),
            _ => &[],
        };
        let callsign = feats.iter().find_map(|f| f.callsign.clone());
        let mut seen = HashSet::new();
        feats.retain(|f| seen.insert(f.compact()));
        feats
            .into_iter()
            .map(|f| {
                let words: Vec<Option<u32>> = {
                    let mut ws: Vec<&String> = f.words.iter().collect();
                    ws.sort();
                    ws.dedup();
                    ws.iter()
                        .map(|w| self.words.get(w.as_str()).copied())
                        .collect()
                };
                // A word no guide has weighs as a word seen once.
                let rare = (1.0 + self.names.len().max(1) as f32).ln();
                let weight = words
                    .iter()
                    .map(|w| w.map_or(rare, |w| self.weights[w as usize]))
                    .sum();
                Probe {
                    numbers: numbers_of(&f.words),
                    compact: f.compact(),
                    words,
                    weight,
                    shift,
                    country: country.clone(),
                    callsign: callsign.clone(),
                    hint: hint.clone(),
                    written,
                }
            })
            .collect()
    }

    /// Whether a name has two or more words of three letters or more that are neither
    /// generic nor numbers ("Red Bull TV", "Dubai Zaman"): such a name in guides of two
    /// languages or regions is, far more often than not, one channel carried in both.
    fn distinctive(&self, n: &Name) -> bool {
        n.words
            .iter()
            .filter(|&&w| own_word(&self.spelling[w as usize]))
            .count()
            >= 2
    }

    /// Whether interned word `w` is rare: used by one name in `RARE_ONE_IN` or fewer.
    fn rare(&self, w: u32) -> bool {
        self.spellings_of[w as usize] as usize * RARE_ONE_IN <= self.names.len()
    }

    /// Whether name `n` is listed by guides of `INTERNATIONAL_LANGS` languages or more
    /// and has a rare word of its own ("Arirang", "CBeebies"; not "Power TV", "Star"):
    /// a channel carried abroad, one channel across those guides.
    fn international(&self, n: u32) -> bool {
        self.langs_of_name[n as usize] >= INTERNATIONAL_LANGS
            && self.names[n as usize]
                .words
                .iter()
                .any(|&w| own_word(&self.spelling[w as usize]) && self.rare(w))
    }

    /// Whether a name is too short or too plain to say which country's channel it is.
    fn generic(&self, n: &Name) -> bool {
        let short = n.compact.chars().count() <= SHORT;
        let plain = n.words.iter().all(|&w| {
            let word = self.spelling[w as usize].as_ref();
            GENERIC.contains(&word) || word.bytes().all(|b| b.is_ascii_digit())
        });
        short || plain
    }

    /// The country of a name: its own suffix, else its channel's.
    fn country<'a>(&'a self, n: &'a Name) -> Option<&'a str> {
        n.country
            .as_deref()
            .or(self.country_of[n.channel as usize].as_deref())
    }

    /// Whether guide channel `c` (its name `n`) is placed in `country`: its name's or
    /// its own country, or its guide's region.
    fn placed_in(&self, c: u32, n: u32, country: &str) -> bool {
        self.country(&self.names[n as usize]) == Some(country)
            || self.region_of[c as usize].as_deref() == Some(country)
    }

    /// Whether guide channel `c` is listed in one of `languages`; `None` when its
    /// guide gives no language.
    fn speaks(&self, c: u32, languages: &[&str]) -> Option<bool> {
        self.lang_of[c as usize].map(|l| languages.contains(&&*self.lang_names[l as usize]))
    }

    /// Whether guide channels `a` and `b` are in guides of different languages or of
    /// different regions.
    fn conflict(&self, a: u32, b: u32) -> bool {
        let differ =
            |x: Option<&str>, y: Option<&str>| matches!((x, y), (Some(x), Some(y)) if x != y);
        let (a, b) = (a as usize, b as usize);
        let langs = matches!((self.lang_of[a], self.lang_of[b]), (Some(x), Some(y)) if x != y);
        langs || differ(self.region_of[a].as_deref(), self.region_of[b].as_deref())
    }

    /// Whether names `a` and `b` are known to be of different countries.
    fn countries_differ(&self, a: u32, b: u32) -> bool {
        let (a, b) = (&self.names[a as usize], &self.names[b as usize]);
        matches!((self.country(a), self.country(b)), (Some(x), Some(y)) if x != y)
    }

    /// `p` against `n`: `None` when a hard feature differs.
    fn score(&self, p: &Probe, n: &Name) -> Option<f32> {
        if p.shift != n.shift {
            return None;
        }
        if let (Some(a), Some(b)) = (&p.country, self.country(n)) {
            if a.as_str() != b {
                return None;
            }
        }
        let same_callsign = match (&p.callsign, &n.callsign) {
            (Some(a), Some(b)) if a.as_str() != &**b => return None,
            (Some(_), Some(_)) => true,
            _ => false,
        };
        let numbers: Vec<u32> = p.numbers.iter().filter_map(|s| s.parse().ok()).collect();
        let mut score = if p.compact == *n.compact {
            1.0
        } else if same_callsign {
            0.95
        } else if numbers != *n.numbers {
            return None;
        } else {
            let shared: f32 = p
                .words
                .iter()
                .flatten()
                .filter(|w| n.words.binary_search(w).is_ok())
                .map(|&w| self.weights[w as usize])
                .sum();
            2.0 * shared / (p.weight + n.weight).max(f32::EPSILON)
        };
        if same_callsign {
            score = score.max(0.95);
        }
        if p.country.is_some() && p.country.as_deref() == self.country(n) {
            // Same country: ahead of an otherwise equal name without one.
            score += 0.01;
        }
        if p.country.is_some()
            && p.country.as_deref() == self.region_of[n.channel as usize].as_deref()
        {
            // In a guide made for the lineup channel's country: ahead of the same name
            // in another country's guide.
            score += 0.005;
        }
        if let Some(hint) = p.hint.as_deref() {
            // Placed in the country the stream's address hints, or in a guide in one
            // of its languages: ahead of the same name elsewhere.
            if self.region_of[n.channel as usize].as_deref() == Some(hint)
                || self.country(n) == Some(hint)
            {
                score += 0.003;
            }
            if self.speaks(n.channel, languages_of(hint)) == Some(true) {
                score += 0.002;
            }
        }
        if self.speaks(n.channel, p.written) == Some(true) {
            // Listed in a language of the name's script: after the address's hint.
            score += 0.001;
        }
        Some(score)
    }

    /// Why no candidate scored: a guide channel of the same name that a hard feature
    /// keeps apart (a time shift, a country), else that none shares a word.
    fn why_none(&self, probes: &[Probe], candidates: &HashSet<u32>) -> String {
        let mut same: Vec<&Name> = candidates
            .iter()
            .map(|&n| &self.names[n as usize])
            .filter(|n| probes.iter().any(|p| p.compact == *n.compact))
            .collect();
        same.sort_by(|a, b| a.shown.cmp(&b.shown));
        let shift = |s: u8| match s {
            0 => "the live feed".to_string(),
            s => format!("+{s}"),
        };
        for n in &same {
            if let Some(p) = probes.iter().find(|p| p.shift != n.shift) {
                return format!(
                    "\"{}\" has the same name but is {} and this channel {}: a time-shifted feed never takes the guide of another",
                    n.shown,
                    shift(n.shift),
                    shift(p.shift)
                );
            }
        }
        for n in &same {
            let Some(theirs) = self.country(n) else {
                continue;
            };
            if let Some(ours) = probes.iter().find_map(|p| p.country.as_deref()) {
                if ours != theirs {
                    return format!(
                        "\"{}\" has the same name but is of another country ({theirs}, this channel {ours})",
                        n.shown
                    );
                }
            }
        }
        if candidates.is_empty() {
            "no guide channel shares a word with the name".into()
        } else {
            "no guide channel sharing a word with the name can be it (other numbers, callsign or country)".into()
        }
    }

    /// The features that decided a match, as a reason.
    fn why(&self, probes: &[Probe], n: &Name, score: f32) -> String {
        let mut parts = vec![format!("score {:.2}", score.min(1.0))];
        if probes.iter().any(|p| p.compact == *n.compact) {
            parts.push(format!("same words as \"{}\"", n.shown));
        } else {
            parts.push(format!("words shared with \"{}\"", n.shown));
        }
        if n.shift > 0 {
            parts.push(format!("both +{}", n.shift));
        }
        if let Some(c) = self.country(n) {
            if probes.iter().any(|p| p.country.as_deref() == Some(c)) {
                parts.push(format!("country {c}"));
            }
        }
        if let Some(h) = probes.iter().find_map(|p| p.hint.as_deref()) {
            if self.country(n) == Some(h)
                || self.region_of[n.channel as usize].as_deref() == Some(h)
                || self.speaks(n.channel, languages_of(h)) == Some(true)
            {
                parts.push(format!("its stream's address hints {h}"));
            }
        }
        let written = probes.first().map_or(&[][..], |p| p.written);
        if self.speaks(n.channel, written) == Some(true) {
            parts.push("listed in a language of its name's script".into());
        }
        if let Some(c) = n.callsign.as_deref() {
            if probes.iter().any(|p| p.callsign.as_deref() == Some(c)) {
                parts.push(format!("callsign {}", c.to_uppercase()));
            }
        }
        parts.join(", ")
    }
}

/// The country the query's stream addresses hint (`features::country_of_url`), when
/// they agree.
fn stream_country(q: &Query) -> Option<String> {
    let mut found = q.urls.iter().filter_map(|u| features::country_of_url(u));
    let first = found.next()?;
    found.all(|c| c == first).then_some(first)
}

/// The languages (as `<display-name lang>` writes them) of a country's own channels;
/// none for a country not listed.
fn languages_of(country: &str) -> &'static [&'static str] {
    match country {
        "uk" | "us" | "ie" | "au" | "nz" => &["en"],
        "ca" => &["en", "fr"],
        "de" | "at" => &["de"],
        "ch" => &["de", "fr", "it"],
        "fr" | "mc" => &["fr"],
        "be" => &["fr", "nl"],
        "lu" => &["lb", "fr", "de"],
        "nl" => &["nl"],
        "es" => &["es", "ca", "gl", "eu"],
        "ad" => &["ca"],
        "pt" | "br" | "ao" | "mz" => &["pt"],
        "mx" | "ar" | "cl" | "co" | "pe" | "ve" | "ec" | "uy" | "py" | "bo" | "cr" | "pa"
        | "gt" | "hn" | "sv" | "ni" | "do" | "cu" | "pr" => &["es"],
        "it" | "sm" | "va" => &["it"],
        "pl" => &["pl"],
        "cz" => &["cs"],
        "sk" => &["sk"],
        "hu" => &["hu"],
        "ro" | "md" => &["ro"],
        "bg" => &["bg"],
        "gr" | "cy" => &["el"],
        "tr" => &["tr"],
        "ru" => &["ru"],
        "ua" => &["uk"],
        "by" => &["be", "ru"],
        "rs" | "me" => &["sr"],
        "hr" => &["hr"],
        "ba" => &["bs", "hr", "sr"],
        "si" => &["sl"],
        "mk" => &["mk"],
        "al" | "xk" => &["sq"],
        "se" => &["sv"],
        "no" => &["no", "nb", "nn"],
        "dk" => &["da"],
        "fi" => &["fi"],
        "is" => &["is"],
        "ee" => &["et"],
        "lv" => &["lv"],
        "lt" => &["lt"],
        "il" => &["he"],
        "ae" | "sa" | "eg" | "qa" | "kw" | "bh" | "om" | "jo" | "lb" | "iq" | "ma" | "dz"
        | "tn" | "ly" | "sy" | "ye" | "sd" | "ps" => &["ar"],
        "ir" => &["fa"],
        "cn" | "tw" | "hk" | "mo" => &["zh"],
        "jp" => &["ja"],
        "kr" => &["ko"],
        "th" => &["th"],
        "vn" => &["vi"],
        "id" => &["id"],
        "my" => &["ms"],
        "kz" => &["kk"],
        "ge" => &["ka"],
        "am" => &["hy"],
        "az" => &["az"],
        _ => &[],
    }
}

/// Whether a word names something of its own: three letters or more, neither generic
/// ("TV", "Canal") nor a number.
fn own_word(word: &str) -> bool {
    !GENERIC.contains(&word) && !word.bytes().all(|b| b.is_ascii_digit()) && word.len() > 2
}

/// The numbers among `words`, sorted: two names with different numbers are different
/// channels.
fn numbers_of(words: &[String]) -> Vec<String> {
    let mut n: Vec<String> = words
        .iter()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .cloned()
        .collect();
    n.sort_by_key(|s| s.parse::<u64>().unwrap_or(u64::MAX));
    n.dedup();
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guide(names: &[&str]) -> Vec<GuideChannel> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| GuideChannel {
                source: "g".into(),
                id: format!("c{i}"),
                names: vec![(*n).into()],
                country: None,
                lang: None,
                region: None,
            })
            .collect()
    }

    fn find(guide_names: &[&str], name: &str) -> Outcome {
        let index = Index::new(&guide(guide_names));
        let q = Query {
            names: vec![name.into()],
            ..Query::default()
        };
        index.find(&q, &HashSet::new(), Settings::default())
    }

    fn chosen(guide_names: &[&str], name: &str) -> Option<usize> {
        find(guide_names, name).chosen.map(|c| c.channel)
    }

    #[test]
    fn same_words_match_whatever_the_spelling() {
        let g = ["BBC One", "BBC Two", "ITV", "ITV +1"];
        assert_eq!(chosen(&g, "BBC One HD"), Some(0));
        assert_eq!(chosen(&g, "BBCOne"), Some(0));
        assert_eq!(chosen(&g, "bbc 1 (720p)"), Some(0));
        // "ITV" is three letters: used by channels of several countries, it needs
        // the lineup channel's country to match, and a guide channel placed there.
        assert_eq!(chosen(&g, "ITV FHD"), None);
        assert_eq!(chosen(&g, "ITV FHD UK"), None);
        let mut uk = guide(&g);
        for c in &mut uk {
            c.region = Some("uk".into());
        }
        let uk = Index::new(&uk);
        let pick = |name: &str| {
            let q = Query {
                names: vec![name.into()],
                ..Query::default()
            };
            uk.find(&q, &HashSet::new(), Settings::default())
                .chosen
                .map(|c| c.channel)
        };
        assert_eq!(pick("ITV FHD"), None);
        assert_eq!(pick("ITV FHD UK"), Some(2));
        assert_eq!(pick("ITV+1 UK"), Some(3));
        let out = find(&g, "BBC One HD");
        assert!(
            out.reason.starts_with("score 1.00, same words"),
            "{}",
            out.reason
        );
    }

    #[test]
    fn a_playlists_country_prefix_places_the_channel() {
        // "UK: ITV" is ITV placed in the UK: the short name takes the British listing.
        assert_eq!(
            chosen(&["Channel 5 SG", "Channel 5 UK"], "UK: Channel 5"),
            Some(1)
        );
        assert_eq!(chosen(&["BBC One", "BBC Two"], "UK | BBC Two HD"), Some(1));
        // Two channels of the name and no country said: neither.
        assert_eq!(chosen(&["Channel 5 SG", "Channel 5 UK"], "Channel 5"), None);
    }

    #[test]
    fn a_trailing_code_of_another_country_than_the_channels_is_part_of_its_name() {
        // "5 USA" is a British channel: its guide id says uk, so "USA" is a word of its
        // name, and a lineup channel of a "UK" group takes it, not the American one.
        let mut g = guide(&["5USA", "5USA"]);
        g[0].country = Some("uk".into());
        g[1].country = Some("us".into());
        let index = Index::new(&g);
        let q = |name: &str, group: &str| Query {
            names: vec![name.into()],
            group: group.into(),
            ..Query::default()
        };
        let found = index.find(&q("5 USA", "UK"), &HashSet::new(), Settings::default());
        assert_eq!(found.chosen.map(|c| c.channel), Some(0), "{}", found.reason);
        assert!(found.reason.contains("country uk"), "{}", found.reason);
        // Placed in the US (or nowhere), the name's code is its country.
        let us = index.find(&q("5 USA", "US"), &HashSet::new(), Settings::default());
        assert_eq!(us.chosen.map(|c| c.channel), Some(1), "{}", us.reason);
        // A tvg-id's domain places a channel too.
        let by_id = Query {
            names: vec!["5 USA".into()],
            tvg_ids: vec!["5USA.uk".into()],
            ..Query::default()
        };
        let found = index.find(&by_id, &HashSet::new(), Settings::default());
        assert_eq!(found.chosen.map(|c| c.channel), Some(0), "{}", found.reason);
    }

    #[test]
    fn a_decided_channel_is_scored_as_find_scores_it() {
        let index = Index::new(&guide(&["BBC One", "BBC One Scotland", "ITV +1"]));
        let q = |n: &str| Query {
            names: vec![n.into()],
            ..Query::default()
        };
        assert_eq!(index.score_of(&q("BBC One HD"), 0), Some(1.0));
        let regional = index.score_of(&q("BBC One HD"), 1).unwrap();
        assert!(regional > 0.0 && regional < 1.0, "{regional}");
        assert_eq!(index.score_of(&q("ITV"), 2), None);
    }

    #[test]
    fn a_time_shift_never_matches_its_base() {
        assert_eq!(chosen(&["ITV", "Film4"], "ITV +1"), None);
        assert_eq!(chosen(&["ITV +1"], "ITV"), None);
        assert_eq!(chosen(&["Film4 +2"], "Film4 +1"), None);
        // The reason says so, not that no name is alike.
        let why = |g: &[&str], name: &str| find(g, name).reason;
        assert_eq!(
            why(&["Fox News"], "Fox News +1"),
            "\"Fox News\" has the same name but is the live feed and this channel +1: a time-shifted feed never takes the guide of another"
        );
        assert!(why(&["ITV +1"], "ITV HD").contains("is +1 and this channel the live feed"));
        assert_eq!(
            why(&["Channel 5 SG"], "Channel 5 UK"),
            "\"Channel 5 SG\" has the same name but is of another country (sg, this channel uk)"
        );
        assert_eq!(
            why(&["Film4"], "Dave"),
            "no guide channel shares a word with the name"
        );
    }

    #[test]
    fn numbers_and_countries_must_agree() {
        assert_eq!(chosen(&["Sky Sports 2"], "Sky Sports 1"), None);
        assert_eq!(chosen(&["Channel 5 SG"], "Channel 5 UK"), None);
        // Country known on one side only: the name decides, unless it is a plain
        // name ("Channel 5"), which needs a guide channel placed in that country.
        assert_eq!(chosen(&["Channel 5 Drama"], "Channel 5 Drama UK"), Some(0));
        assert_eq!(chosen(&["Channel 5"], "Channel 5 UK"), None);
        // Two channels of the same name: the one of the same country wins.
        assert_eq!(
            chosen(&["Channel 5 SG", "Channel 5 UK"], "Channel 5 UK"),
            Some(1)
        );
    }

    #[test]
    fn ambiguous_or_weak_names_stay_unmatched() {
        let out = find(&["Sport TV", "Sport Channel"], "Sport");
        assert_eq!(out.chosen, None, "{}", out.reason);
        assert_eq!(out.alternatives.len(), 2);
        assert_eq!(chosen(&["Discovery Science"], "Discovery"), None);
    }

    #[test]
    fn taken_channels_and_tvg_ids_and_groups() {
        let index = Index::new(&guide(&["BBC One", "BBC One"]));
        let q = Query {
            names: vec!["BBC1".into()],
            ..Query::default()
        };
        let taken: HashSet<usize> = [0].into();
        let out = index.find(&q, &taken, Settings::default());
        assert_eq!(out.chosen.map(|c| c.channel), Some(1), "{}", out.reason);
        // The tvg-id speaks when the name is unhelpful; the group gives a country.
        let index = Index::new(&guide(&["Das Erste DE", "Das Erste CH"]));
        let q = Query {
            names: vec!["Erste".into()],
            tvg_ids: vec!["DasErste.de".into()],
            ..Query::default()
        };
        assert_eq!(
            index
                .find(&q, &HashSet::new(), Settings::default())
                .chosen
                .map(|c| c.channel),
            Some(0)
        );
        let q = Query {
            names: vec!["Das Erste".into()],
            group: "DE | Vollprogramm".into(),
            ..Query::default()
        };
        assert_eq!(
            index
                .find(&q, &HashSet::new(), Settings::default())
                .chosen
                .map(|c| c.channel),
            Some(0)
        );
    }

    #[test]
    fn one_name_twice_in_one_guide_is_ambiguous() {
        // Across guides the same name is the same channel; within one, two channels.
        let mut g = guide(&["Eurosport", "Eurosport"]);
        assert_eq!(
            Index::new(&g)
                .find(
                    &Query {
                        names: vec!["Eurosport".into()],
                        ..Query::default()
                    },
                    &HashSet::new(),
                    Settings::default()
                )
                .chosen,
            None
        );
        g[1].source = "other".into();
        let out = Index::new(&g).find(
            &Query {
                names: vec!["Eurosport".into()],
                ..Query::default()
            },
            &HashSet::new(),
            Settings::default(),
        );
        assert_eq!(out.chosen.map(|c| c.channel), Some(0));
    }

    #[test]
    fn callsigns_decide() {
        assert_eq!(
            chosen(&["WABC-DT", "WCBS-DT"], "ABC 7 New York WABC"),
            Some(0)
        );
        assert_eq!(chosen(&["WCBS"], "WABC"), None);
    }

    fn placed(names: &[(&str, Option<&str>, Option<&str>)]) -> Index {
        let g: Vec<GuideChannel> = names
            .iter()
            .enumerate()
            .map(|(i, (n, country, lang))| GuideChannel {
                source: format!("g{i}"),
                id: format!("c{i}"),
                names: vec![(*n).into()],
                country: country.map(Into::into),
                lang: lang.map(Into::into),
                region: None,
            })
            .collect();
        Index::new(&g)
    }

    fn pick(index: &Index, name: &str, group: &str) -> Option<usize> {
        choice_of(
            index,
            Query {
                names: vec![name.into()],
                group: group.into(),
                ..Query::default()
            },
        )
    }

    /// The guide channel `index` chooses for `q`, nothing taken.
    fn choice_of(index: &Index, q: Query) -> Option<usize> {
        index
            .find(&q, &HashSet::new(), Settings::default())
            .chosen
            .map(|c| c.channel)
    }

    #[test]
    fn one_name_in_two_countries_or_languages_is_two_channels() {
        // Two guides, one name, two countries: ambiguous until the lineup's country
        // says which.
        let index = placed(&[
            ("Kidoodle TV", Some("us"), None),
            ("Kidoodle TV", Some("ca"), None),
        ]);
        assert_eq!(pick(&index, "Kidoodle TV", ""), None);
        assert_eq!(pick(&index, "Kidoodle TV", "CA | Kids"), Some(1));
        // A guide channel of another country than the lineup's is no candidate.
        let index = placed(&[("Kidoodle TV", Some("us"), None)]);
        assert_eq!(pick(&index, "Kidoodle TV", "CA | Kids"), None);
        assert_eq!(pick(&index, "Kidoodle TV", ""), Some(0));
        // Two languages, no country: ambiguous.
        let index = placed(&[
            ("Canal Rural", None, Some("es")),
            ("Canal Rural", None, Some("pt")),
        ]);
        assert_eq!(pick(&index, "Canal Rural", ""), None);
        // One language across guides: one channel.
        let index = placed(&[
            ("Canal Rural", None, Some("pt")),
            ("Canal Rural", None, Some("pt")),
        ]);
        assert_eq!(pick(&index, "Canal Rural", ""), Some(0));
    }

    #[test]
    fn short_or_plain_names_need_a_country() {
        let index = placed(&[("ATV", None, None), ("Canal 6", None, None)]);
        let out = index.find(
            &Query {
                names: vec!["ATV (720p)".into()],
                ..Query::default()
            },
            &HashSet::new(),
            Settings::default(),
        );
        assert_eq!(out.chosen, None);
        assert!(out.reason.contains("no country is known"), "{}", out.reason);
        assert_eq!(pick(&index, "Canal 6", ""), None);
        // A country known, but no guide places the name there: still unmatched.
        let q = Query {
            names: vec!["ATV".into()],
            group: "TR | Ulusal".into(),
            ..Query::default()
        };
        let out = index.find(&q, &HashSet::new(), Settings::default());
        assert_eq!(out.chosen, None);
        assert!(
            out.reason.contains("no guide places it in tr"),
            "{}",
            out.reason
        );
        // Placed by the channel's own country, or by its guide's region.
        let index = placed(&[("ATV", Some("tr"), None), ("Canal 6", None, None)]);
        assert_eq!(pick(&index, "ATV", "TR | Ulusal"), Some(0));
        assert_eq!(pick(&index, "Canal 6 SV", ""), None);
        let mut g = guide(&["Canal 6", "Canal 6"]);
        g[0].source = "hn".into();
        g[0].region = Some("hn".into());
        g[1].region = Some("sv".into());
        let index = Index::new(&g);
        assert_eq!(pick(&index, "Canal 6 SV", ""), Some(1));
        assert_eq!(pick(&index, "Canal 6", "HN | Nacional"), Some(0));
        assert_eq!(pick(&index, "Canal 6", ""), None);
    }

    #[test]
    fn with_a_country_known_the_same_name_elsewhere_is_the_same_channel() {
        let mut g = guide(&[
            "Al Arabiya",
            "Al Arabiya",
            "Band",
            "Band HD",
            "MBC 1",
            "MBC 1",
        ]);
        g[0].source = "uk guide".into();
        g[0].region = Some("uk".into());
        g[0].lang = Some("en".into());
        g[1].source = "ae guide".into();
        g[1].region = Some("ae".into());
        g[1].lang = Some("ar".into());
        let index = Index::new(&g);
        // Two regions, two languages, no country known: nothing says which.
        assert_eq!(pick(&index, "Al Arabiya", ""), None);
        // Known: a guide made for that country first; else any.
        assert_eq!(pick(&index, "Al Arabiya", "AE"), Some(1));
        assert_eq!(pick(&index, "Al Arabiya", "SA"), Some(0));
        // One guide listing a channel in two qualities: one channel.
        assert_eq!(pick(&index, "Band", "BR"), Some(2));
        // One guide listing one name twice as written: two channels.
        assert_eq!(pick(&index, "MBC 1", "AE"), None);
    }

    #[test]
    fn a_distinctive_name_in_two_languages_is_one_channel_even_without_a_country() {
        let mut g = guide(&["Red Bull TV", "Red Bull TV", "Kidoodle TV", "Kidoodle TV"]);
        for (i, c) in g.iter_mut().enumerate() {
            c.source = format!("g{i}");
            c.lang = Some(if i % 2 == 0 { "en" } else { "de" }.into());
        }
        let index = Index::new(&g);
        assert_eq!(pick(&index, "Red Bull TV", ""), Some(0));
        // One word of its own ("TV" is generic): which of the two is unknown.
        assert_eq!(pick(&index, "Kidoodle TV", ""), None);
    }

    #[test]
    fn a_platform_name_comes_off_a_long_enough_name_without_a_country() {
        let g = ["Black Ink Crew", "Classic Movies", "Forensic Files"];
        assert_eq!(chosen(&g, "Pluto TV Black Ink Crew (720p)"), Some(0));
        // Two words of its own: in three names, nothing says either is rare.
        assert_eq!(chosen(&g, "Pluto TV Forensic Files"), None);
        // In 14,000 names, "forensic" is rare (one name), not "classic" nor "movies"
        // (three each).
        let filler: Vec<String> = (0..14_000).map(|i| format!("Filler {i}")).collect();
        let mut big: Vec<&str> = g.to_vec();
        big.extend(["Classic Hits", "Classic Rock", "Movies 24", "Action Movies"]);
        big.extend(filler.iter().map(String::as_str));
        assert_eq!(chosen(&big, "Pluto TV Forensic Files"), Some(2));
        assert_eq!(chosen(&big, "Pluto TV Classic Movies"), None);
        let index = placed(&[("Classic Movies", None, None)]);
        assert_eq!(pick(&index, "Pluto TV Classic Movies", "US"), Some(0));
        // One word of its own will do when it is rare: "naruto" (one name), not
        // "movies".
        big.push("Naruto");
        assert_eq!(chosen(&big, "Pluto TV Naruto (720p)"), Some(big.len() - 1));
        assert_eq!(chosen(&big, "Pluto TV Movies"), None);
    }

    #[test]
    fn a_rare_name_in_guides_of_many_languages_is_one_channel_carried_abroad() {
        // 14,000 other names: "arirang" (one name) is rare, "power" (four) is not.
        let filler: Vec<String> = (0..14_000).map(|i| format!("Filler {i}")).collect();
        let build = |name: &str, langs: &[&str]| {
            let mut g: Vec<GuideChannel> = langs
                .iter()
                .enumerate()
                .map(|(i, l)| GuideChannel {
                    source: format!("g{i}"),
                    id: format!("c{i}"),
                    names: vec![name.into()],
                    country: None,
                    lang: Some((*l).into()),
                    region: None,
                })
                .collect();
            let rest =
                filler
                    .iter()
                    .map(String::as_str)
                    .chain(["Power Turk", "Power Love", "Power HD"]);
            g.extend(rest.enumerate().map(|(i, n)| GuideChannel {
                source: "filler".into(),
                id: format!("f{i}"),
                names: vec![n.into()],
                country: None,
                lang: None,
                region: None,
            }));
            Index::new(&g)
        };
        let four = ["en", "de", "fr", "es"];
        assert_eq!(
            pick(&build("Arirang", &four), "Arirang (720p)", ""),
            Some(0)
        );
        // Three languages: perhaps two channels sharing a name.
        assert_eq!(pick(&build("Arirang", &four[..3]), "Arirang", ""), None);
        // A common word: perhaps channels of many countries.
        assert_eq!(pick(&build("Power TV", &four), "Power TV", ""), None);
        // The lineup channel's country known: as before, any guide will do.
        assert_eq!(
            pick(&build("Arirang", &four[..3]), "Arirang", "KR"),
            Some(0)
        );
    }

    #[test]
    fn twins_in_one_guide_are_told_apart_by_the_countrys_language() {
        let mut g = guide(&["Rai 4", "Rai 4", "Rotana Cinema", "Rotana Cinema"]);
        for (c, l) in g.iter_mut().zip(["de", "it", "ar", "ar"]) {
            c.lang = Some(l.into());
        }
        let index = Index::new(&g);
        // The Italian list's "Rai 4" for an Italian channel, though the German one
        // comes first.
        assert_eq!(pick(&index, "Rai 4", "IT"), Some(1));
        assert_eq!(pick(&index, "Rai 4", "DE"), Some(0));
        // Neither language the country's, or both: two channels still.
        assert_eq!(pick(&index, "Rai 4", "FR"), None);
        assert_eq!(pick(&index, "Rai 4", ""), None);
        assert_eq!(pick(&index, "Rotana Cinema", "EG"), None);
    }

    /// `index`'s choice for `name` streamed from `url`, no country known.
    fn pick_streamed(index: &Index, name: &str, url: &str) -> Option<usize> {
        choice_of(
            index,
            Query {
                names: vec![name.into()],
                urls: vec![url.into()],
                ..Query::default()
            },
        )
    }

    #[test]
    fn a_stream_address_hints_a_country_without_requiring_it() {
        // One name in guides of two languages: the one in the language of the
        // country the stream's address hints.
        let index = placed(&[("Telemax", None, Some("de")), ("Telemax", None, Some("es"))]);
        assert_eq!(pick(&index, "Telemax", ""), None);
        assert_eq!(
            pick_streamed(&index, "Telemax", "https://live.telemax.ar/a.m3u8"),
            Some(1)
        );
        assert_eq!(
            pick_streamed(&index, "Telemax", "https://cdn.telemax.de/a.m3u8"),
            Some(0)
        );
        // A generic or vanity domain hints nothing; nor do two addresses that disagree.
        assert_eq!(
            pick_streamed(&index, "Telemax", "https://telemax.com/a"),
            None
        );
        assert_eq!(
            pick_streamed(&index, "Telemax", "https://telemax.tv/a"),
            None
        );
        let q = Query {
            names: vec!["Telemax".into()],
            urls: vec![
                "https://a.telemax.ar/".into(),
                "https://b.telemax.de/".into(),
            ],
            ..Query::default()
        };
        assert_eq!(choice_of(&index, q), None);
        // One guide's listings under two languages: as with a country known.
        let mut g = guide(&["Rai 4", "Rai 4"]);
        for (c, l) in g.iter_mut().zip(["de", "it"]) {
            c.lang = Some(l.into());
        }
        let index = Index::new(&g);
        assert_eq!(pick(&index, "Rai 4", ""), None);
        assert_eq!(pick_streamed(&index, "Rai 4", "https://rai.it/4"), Some(1));
        // A short name placed in that country by its guide.
        let mut g = guide(&["ATV", "ATV"]);
        g[1].source = "other".into();
        g[0].region = Some("tr".into());
        g[1].region = Some("ad".into());
        let index = Index::new(&g);
        assert_eq!(pick(&index, "ATV", ""), None);
        let out = index.find(
            &Query {
                names: vec!["ATV (720p)".into()],
                urls: vec!["https://videos.rtva.ad/live/rtva/playlist.m3u8".into()],
                ..Query::default()
            },
            &HashSet::new(),
            Settings::default(),
        );
        assert_eq!(out.chosen.map(|c| c.channel), Some(1), "{}", out.reason);
        assert!(
            out.reason.contains("its stream's address hints ad"),
            "{}",
            out.reason
        );
        assert_eq!(pick_streamed(&index, "ATV", "https://atv.hu/live"), None);
        // A hint, never a country: a guide channel of another country still matches
        // ("Red Bull TV" streamed from a French host).
        let index = placed(&[("Red Bull TV", Some("at"), Some("de"))]);
        assert_eq!(
            pick_streamed(&index, "Red Bull TV", "https://rbtv.example.fr/x"),
            Some(0)
        );
    }

    #[test]
    fn a_name_written_in_a_script_prefers_a_listing_in_its_languages() {
        let index = placed(&[
            ("REN TV", None, Some("he")),
            ("Рен ТВ", None, Some("ru")),
            ("Prima", None, Some("cs")),
            ("Prima", None, Some("ro")),
        ]);
        assert_eq!(pick(&index, "РЕН ТВ (540p)", ""), Some(1));
        // Written in Latin: nothing says which.
        assert_eq!(pick(&index, "REN TV", ""), None);
        assert_eq!(pick(&index, "Prima", ""), None);
        // Neither listing in a language of the script: still two channels.
        assert_eq!(pick(&index, "Прима", ""), None);
        // The stream's address speaks first: a Hebrew guide's for an Israeli host.
        assert_eq!(
            pick_streamed(&index, "РЕН ТВ", "https://tv.example.il/ren"),
            Some(0)
        );
    }

    #[test]
    fn same_words_need_a_smaller_lead_than_shared_words() {
        let g = guide(&["SIC TV", "SIC HD"]);
        let out = Index::new(&g).find(
            &Query {
                names: vec!["SIC TV (720p)".into()],
                ..Query::default()
            },
            &HashSet::new(),
            Settings::default(),
        );
        assert_eq!(out.chosen.map(|c| c.channel), Some(0), "{}", out.reason);
        let strict = Settings {
            exact_margin: 0.5,
            ..Settings::default()
        };
        let out = Index::new(&g).find(
            &Query {
                names: vec!["SIC TV (720p)".into()],
                ..Query::default()
            },
            &HashSet::new(),
            strict,
        );
        assert_eq!(out.chosen, None, "{}", out.reason);
    }
}
