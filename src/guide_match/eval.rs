//! The matcher measured on public data whose answers are known: guide channel lists
//! (TSV rows `site`, `lang`, `display_name`, `xmltv_id`) against an M3U whose
//! `tvg-id`s name the same channels. The ids are stripped before matching.
//!
//! Most rows (61,034 of 72,499 in the public set) carry no id, and many of those are
//! the very channels that a labelled row of another site lists under the same name.
//! A chosen row that carries an id is judged by it: right when it is the entry's id.
//! A chosen row without one is judged by its name: the ids known for that name (every
//! row whose name has the same features) decide. Right: they are exactly the entry's
//! id. Wrong: any other id is among them (a name that means two channels is wrong even
//! when one of them is right). Unverifiable: no row of that name carries an id;
//! counted neither right nor wrong, so it lowers recall. Two other counts are kept for
//! comparison: `by_name` judges every match by its name (the first rule of this
//! evaluation, blind to the chosen row's own id) and `strict` by the chosen row alone
//! (a row without an id counting as wrong).
//!
//! The matcher is told each entry's name, and in `Context::NameAndCountry` also the
//! group a playlist sorted by country gives it (its id's country code, the rest of
//! the id hidden).
//! Pure: the caller reads the files.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::features;

use super::matcher::{GuideChannel, Index, Query, Settings};

/// Which M3U entries are counted: the matcher's settings are tuned on one half and
/// reported on the other, split by entry position (even, odd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Tune,
    HeldOut,
    All,
}

impl Split {
    fn keeps(self, position: usize) -> bool {
        match self {
            Split::Tune => position.is_multiple_of(2),
            Split::HeldOut => !position.is_multiple_of(2),
            Split::All => true,
        }
    }
}

/// The guide side: one `GuideChannel` per row (source = site, id = `site:row`), and
/// each row's known id (empty when unknown).
pub struct GuideSet {
    pub channels: Vec<GuideChannel>,
    pub answers: Vec<String>,
}

/// Parses the TSV (a header line first). Rows without a display name are skipped.
pub fn guide_set(tsv: &str, limit: Option<usize>) -> GuideSet {
    let mut channels = Vec::new();
    let mut answers = Vec::new();
    // A site whose channels come in more than two languages serves many countries (an
    // aggregator): its domain says nothing of where its guides are watched.
    let mut langs: HashMap<&str, HashSet<&str>> = HashMap::new();
    for line in tsv.lines().skip(1) {
        let mut cols = line.split('\t');
        if let (Some(site), Some(lang)) = (cols.next(), cols.next()) {
            langs.entry(site).or_default().insert(lang.trim());
        }
    }
    for (row, line) in tsv.lines().skip(1).enumerate() {
        if limit.is_some_and(|l| channels.len() >= l) {
            break;
        }
        let mut cols = line.split('\t');
        let (Some(site), Some(lang), Some(name)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        if name.trim().is_empty() {
            continue;
        }
        channels.push(GuideChannel {
            source: site.to_string(),
            id: format!("{site}:{row}"),
            // The lists keep XML escapes ("A&amp;E"); a guide's reader undoes them.
            names: vec![quick_xml::escape::unescape(name)
                .map_or_else(|_| name.to_string(), |n| n.into_owned())],
            // A guide's ids are hidden here, so no channel's own country is known;
            // the site's country is where its guide is watched.
            country: None,
            region: site_country(site).filter(|_| langs.get(site).is_some_and(|l| l.len() <= 2)),
            lang: Some(lang.trim().to_string()).filter(|l| !l.is_empty()),
        });
        answers.push(base_id(cols.next().unwrap_or_default()));
    }
    GuideSet { channels, answers }
}

/// One site's rows that carry the same id as one guide channel, as that site's XMLTV
/// guide holds it: a guide lists a channel id once, with every name the site gives it
/// (`i.mjh.nz` lists "Outside TV" under Plex and under Samsung, both `OutsideTV.us`).
/// Rows without an id stay one channel each, as listed. The matcher still sees no id:
/// only a guide's shape, one `<channel>` per channel.
pub fn one_channel_per_id(guide: GuideSet) -> GuideSet {
    let mut at: HashMap<(String, String), usize> = HashMap::new();
    let mut out = GuideSet {
        channels: Vec::with_capacity(guide.channels.len()),
        answers: Vec::with_capacity(guide.answers.len()),
    };
    for (c, answer) in guide.channels.into_iter().zip(guide.answers) {
        if !answer.is_empty() {
            if let Some(&i) = at.get(&(c.source.clone(), answer.clone())) {
                let names = &mut out.channels[i].names;
                for n in c.names {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
                continue;
            }
            at.insert((c.source.clone(), answer.clone()), out.channels.len());
        }
        out.channels.push(c);
        out.answers.push(answer);
    }
    out
}

/// A guide site's country: its domain's last part when that is a country code
/// (`freeview.co.uk` → uk, `mewatch.sg` → sg; `dstv.com` none). What a site is known
/// for, as a guide source configured for one country would be; never the answer.
/// Not used for a site listing channels in more than two languages (`i.mjh.nz`).
fn site_country(site: &str) -> Option<String> {
    let tld = site.rsplit('.').next()?.to_ascii_lowercase();
    features::of_tvg_id(&format!("X.{tld}")).and_then(|f| f.country)
}

/// One M3U entry: its name, its (to be stripped) id and its stream's address.
pub struct Entry {
    pub name: String,
    pub answer: String,
    /// The first address line after its `#EXTINF` (empty when none).
    pub url: String,
}

impl Entry {
    /// The group a playlist sorted by country gives this entry (iptv-org's own
    /// `index.country.m3u`, most providers' "UK | ..." groups): its id's country code in
    /// capitals. The rest of the id stays hidden.
    pub fn country_group(&self) -> String {
        self.answer
            .rsplit_once('.')
            .map(|(_, c)| c.to_ascii_uppercase())
            .unwrap_or_default()
    }
}

/// The `#EXTINF` entries of an M3U: the name after the last comma, the `tvg-id`, and
/// the address on the first line after it that is neither a tag nor empty.
pub fn entries(m3u: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut open = false;
    for line in m3u.lines().map(str::trim) {
        if let Some(l) = line.strip_prefix("#EXTINF") {
            let answer = l
                .split_once("tvg-id=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(id, _)| base_id(id))
                .unwrap_or_default();
            let name = l.rsplit_once(',').map_or("", |(_, n)| n).trim().to_string();
            out.push(Entry {
                name,
                answer,
                url: String::new(),
            });
            open = true;
        } else if open && !line.is_empty() && !line.starts_with('#') {
            if let Some(e) = out.last_mut() {
                e.url = line.to_string();
            }
            open = false;
        }
    }
    out
}

fn base_id(id: &str) -> String {
    id.split('@').next().unwrap_or_default().trim().to_string()
}

/// What one run found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Entries counted (of the split).
    pub entries: usize,
    /// Entries whose channel the guide set has: the recall's base.
    pub with_answer: usize,
    pub right: usize,
    pub wrong: usize,
    pub unmatched: usize,
    /// Entries without an answer in the guide set that were matched anyway (cannot be
    /// judged right or wrong).
    pub matched_without_answer: usize,
    /// Of those, the ones whose entry has an id that the chosen name's labelled rows
    /// do not carry (they carry others): wrong, though outside the recall's base.
    pub wrong_without_answer: usize,
    /// Matches whose name no labelled row has.
    pub unverifiable: usize,
    /// Judged by the chosen row's own id alone: right and wrong.
    pub strict_right: usize,
    pub strict_wrong: usize,
    /// Of `strict_wrong`, the chosen rows that carry an id (another one): wrong for
    /// certain, whatever their names.
    pub labelled_wrong: usize,
    /// Judged by the chosen name alone (every row of that name), even when the chosen
    /// row carries an id: the first rule of this evaluation, kept for comparison.
    pub by_name_right: usize,
    pub by_name_wrong: usize,
    /// Wrong matches (up to 500, those without an answer among them): (entry name, guide name chosen, right id, chosen id).
    pub wrong_examples: Vec<(String, String, String, String)>,
    /// Entries with an answer left unmatched: (entry name, the matcher's reason).
    pub unmatched_examples: Vec<(String, String)>,
}

impl Report {
    pub fn precision(&self) -> f64 {
        self.right as f64 / (self.right + self.wrong).max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        self.right as f64 / self.with_answer.max(1) as f64
    }

    pub fn by_name_precision(&self) -> f64 {
        self.by_name_right as f64 / (self.by_name_right + self.by_name_wrong).max(1) as f64
    }

    pub fn by_name_recall(&self) -> f64 {
        self.by_name_right as f64 / self.with_answer.max(1) as f64
    }

    /// Judged only where the chosen row carries an id (right: `strict_right`).
    pub fn labelled_precision(&self) -> f64 {
        self.strict_right as f64 / (self.strict_right + self.labelled_wrong).max(1) as f64
    }

    pub fn strict_precision(&self) -> f64 {
        self.strict_right as f64 / (self.strict_right + self.strict_wrong).max(1) as f64
    }
}

/// What the matcher is told of each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Its name only.
    Name,
    /// Its name and the group a playlist sorted by country gives it
    /// (`Entry::country_group`).
    NameAndCountry,
}

/// Matches the split's entries against `guide` and counts. A chosen row that carries
/// an id is judged by it; one without, by the ids of every row of its name (see the
/// module doc).
pub fn evaluate(
    guide: &GuideSet,
    index: &Index,
    entries: &[Entry],
    split: Split,
    context: Context,
    settings: Settings,
) -> Report {
    let known: HashSet<&str> = guide
        .answers
        .iter()
        .filter(|a| !a.is_empty())
        .map(String::as_str)
        .collect();
    let mut ids_of_name: HashMap<(String, u8, Option<String>), BTreeSet<&str>> = HashMap::new();
    for (c, answer) in guide.channels.iter().zip(&guide.answers) {
        for n in &c.names {
            let set = ids_of_name.entry(name_key(n)).or_default();
            if !answer.is_empty() {
                set.insert(answer);
            }
        }
    }
    let none = HashSet::new();
    let providers = features::Providers::of(entries.iter().map(|e| e.url.as_str()));
    let mut r = Report::default();
    for (pos, e) in entries.iter().enumerate() {
        if !split.keeps(pos) {
            continue;
        }
        r.entries += 1;
        let has_answer = !e.answer.is_empty() && known.contains(e.answer.as_str());
        let q = Query {
            names: vec![e.name.clone()],
            group: match context {
                Context::Name => String::new(),
                Context::NameAndCountry => e.country_group(),
            },
            // The stream's address, as a product reading the playlist sees it (unless
            // a reseller's site serves most of the playlist: none here).
            urls: if providers.hints(&e.url) {
                vec![e.url.clone()]
            } else {
                Vec::new()
            },
            ..Query::default()
        };
        let out = index.find(&q, &none, settings);
        match (out.chosen, has_answer) {
            (None, true) => {
                r.unmatched += 1;
                r.unmatched_examples
                    .push((e.name.clone(), out.reason.clone()));
            }
            (None, false) => {}
            (Some(c), false) => {
                r.matched_without_answer += 1;
                let ids = ids_of_name.get(&name_key(&c.name));
                if !e.answer.is_empty()
                    && ids.is_some_and(|ids| !ids.is_empty() && !ids.contains(e.answer.as_str()))
                {
                    r.wrong_without_answer += 1;
                    if r.wrong_examples.len() < 500 {
                        let got = ids.map(|i| i.iter().copied().collect::<Vec<_>>().join(" "));
                        r.wrong_examples.push((
                            e.name.clone(),
                            c.name,
                            format!("{} (no row has it)", e.answer),
                            got.unwrap_or_default(),
                        ));
                    }
                }
            }
            (Some(c), true) => {
                let own = &guide.answers[c.channel];
                if *own == e.answer {
                    r.strict_right += 1;
                } else {
                    r.strict_wrong += 1;
                    if !own.is_empty() {
                        r.labelled_wrong += 1;
                    }
                }
                let ids = ids_of_name.get(&name_key(&c.name));
                let by_name = match ids {
                    Some(ids) if ids.is_empty() => None,
                    None => None,
                    Some(ids) => Some(ids.len() == 1 && ids.contains(e.answer.as_str())),
                };
                match by_name {
                    Some(true) => r.by_name_right += 1,
                    Some(false) => r.by_name_wrong += 1,
                    None => {}
                }
                // The chosen row's own id when it has one, else its name's.
                let verdict = if own.is_empty() {
                    by_name
                } else {
                    Some(own == &e.answer)
                };
                match verdict {
                    None => r.unverifiable += 1,
                    Some(true) => r.right += 1,
                    Some(false) => {
                        r.wrong += 1;
                        if r.wrong_examples.len() < 500 {
                            let got = if own.is_empty() {
                                ids.map(|i| i.iter().copied().collect::<Vec<_>>().join(" "))
                                    .unwrap_or_default()
                            } else {
                                own.clone()
                            };
                            r.wrong_examples
                                .push((e.name.clone(), c.name, e.answer.clone(), got));
                        }
                    }
                }
            }
        }
        if has_answer {
            r.with_answer += 1;
        }
    }
    r
}

/// How far matching by equal names could go: of the entries with an answer, how many
/// have a guide name equal to theirs (as the matcher normalises names) that a row
/// carrying their id has. No matcher that needs equal names can be right on more.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ceiling {
    pub with_answer: usize,
    /// A row with their id has a name equal to theirs.
    pub equal: usize,
    /// Of those, names that no row of another id carries.
    pub sole: usize,
    /// Of those, names that no site lists twice.
    pub sole_once: usize,
}

/// The `Ceiling` of the split's entries against `guide`.
pub fn ceiling(guide: &GuideSet, entries: &[Entry], split: Split) -> Ceiling {
    type Key = (String, u8, Option<String>);
    let mut ids_of_name: HashMap<Key, BTreeSet<&str>> = HashMap::new();
    let mut rows_of_name: HashMap<(Key, &str), usize> = HashMap::new();
    for (c, answer) in guide.channels.iter().zip(&guide.answers) {
        for n in &c.names {
            let key = name_key(n);
            *rows_of_name.entry((key.clone(), &c.source)).or_default() += 1;
            let set = ids_of_name.entry(key).or_default();
            if !answer.is_empty() {
                set.insert(answer);
            }
        }
    }
    let twice: HashSet<&Key> = rows_of_name
        .iter()
        .filter(|(_, &rows)| rows > 1)
        .map(|((key, _), _)| key)
        .collect();
    let known: HashSet<&str> = guide.answers.iter().map(String::as_str).collect();
    let mut c = Ceiling::default();
    for (pos, e) in entries.iter().enumerate() {
        if !split.keeps(pos) || e.answer.is_empty() || !known.contains(e.answer.as_str()) {
            continue;
        }
        c.with_answer += 1;
        let key = name_key(&e.name);
        let Some(ids) = ids_of_name.get(&key) else {
            continue;
        };
        if ids.contains(e.answer.as_str()) {
            c.equal += 1;
            if ids.len() == 1 {
                c.sole += 1;
                if !twice.contains(&key) {
                    c.sole_once += 1;
                }
            }
        }
    }
    c
}

/// What makes two names the same to the matcher.
fn name_key(name: &str) -> (String, u8, Option<String>) {
    let f = features::of_name(name);
    (f.compact(), f.shift, f.country)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small sample in the public files' shapes: labelled rows, an id-less copy of
    /// one, a name two channels share, and a +1.
    const TSV: &str = "site\tlang\tdisplay_name\txmltv_id\n\
        a.tv\ten\tBBC One HD\tBBCOne.uk@HD\n\
        b.tv\ten\tBBC One\t\n\
        a.tv\ten\tITV\tITV.uk\n\
        a.tv\ten\tKidoodle TV\tKidoodleTV.ca\n\
        c.tv\ten\tKidoodle TV\tKidoodleTV.us\n\
        a.tv\ten\tFilm4\tFilm4.uk\n";
    const M3U: &str = "#EXTM3U\n\
        #EXTINF:-1 tvg-id=\"BBCOne.uk\",BBC One (1080p)\nhttp://x/1\n\
        #EXTINF:-1 tvg-id=\"ITV.uk\",ITV +1\n#EXTVLCOPT:http-referrer=http://y/\n\nhttp://x/2\n\
        #EXTINF:-1 tvg-id=\"KidoodleTV.ca\",Kidoodle TV [Geo-blocked]\nhttp://x/3\n\
        #EXTINF:-1 tvg-id=\"Film4.uk\",Film 4 (720p)\nhttp://x/4\n\
        #EXTINF:-1 tvg-id=\"\",Unknown TV\nhttp://x/5\n";

    #[test]
    fn counts_right_wrong_and_unmatched_by_name() {
        let guide = guide_set(TSV, None);
        assert_eq!(guide.answers[0], "BBCOne.uk");
        // Each entry's address: the first line after its `#EXTINF` that is no tag.
        let urls: Vec<String> = entries(M3U).into_iter().map(|e| e.url).collect();
        assert_eq!(urls[..2], ["http://x/1", "http://x/2"]);
        let index = Index::new(&guide.channels);
        let r = evaluate(
            &guide,
            &index,
            &entries(M3U),
            Split::All,
            Context::Name,
            Settings::default(),
        );
        assert_eq!(r.with_answer, 4);
        // BBC One and Film 4 right; "Kidoodle TV" names two channels (in guides of no
        // known region, one language: the matcher cannot tell) and takes the first:
        // right by that row's own id, wrong by its name; the "+1" never takes ITV:
        // unmatched.
        assert_eq!((r.right, r.wrong, r.unmatched), (3, 0, 1), "{r:?}");
        assert_eq!((r.by_name_right, r.by_name_wrong), (2, 1), "{r:?}");
        assert!((r.by_name_precision() - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.recall() - 0.75).abs() < 1e-9);
    }

    #[test]
    fn the_ceiling_counts_equal_names_carrying_the_answer() {
        let tsv = format!("{TSV}d.tv\ten\tFilm4\t\nd.tv\ten\tFilm4\t\n");
        let c = ceiling(&guide_set(&tsv, None), &entries(M3U), Split::All);
        // BBC One: equal, sole, listed once a site. ITV +1: no "+1" row. Kidoodle TV:
        // equal, but two ids carry the name. Film 4: equal and sole, but d.tv lists it
        // twice.
        assert_eq!(
            c,
            Ceiling {
                with_answer: 4,
                equal: 3,
                sole: 2,
                sole_once: 1
            }
        );
    }

    #[test]
    fn a_sites_rows_of_one_id_are_one_guide_channel() {
        let tsv = "site\tlang\tdisplay_name\txmltv_id\n\
            m.nz\ten\tOutside TV\tOutsideTV.us\n\
            m.nz\ten\tOutside TV\tOutsideTV.us@East\n\
            m.nz\ten\tOutside\tOutsideTV.us\n\
            n.tv\ten\tOutside TV\tOutsideTV.us\n\
            m.nz\ten\tCircle\t\n\
            m.nz\ten\tCircle\t\n";
        let guide = one_channel_per_id(guide_set(tsv, None));
        // One channel for m.nz's three rows of the id (every name once), one for
        // n.tv's; rows without an id stay as listed.
        let names: Vec<_> = guide.channels.iter().map(|c| c.names.clone()).collect();
        assert_eq!(
            names,
            [
                vec!["Outside TV".to_string(), "Outside".to_string()],
                vec!["Outside TV".to_string()],
                vec!["Circle".to_string()],
                vec!["Circle".to_string()],
            ]
        );
        assert_eq!(guide.answers, ["OutsideTV.us", "OutsideTV.us", "", ""]);
        assert_eq!(guide.channels[1].source, "n.tv");
    }
}
