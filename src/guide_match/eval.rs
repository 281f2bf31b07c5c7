//! The matcher measured on public data whose answers are known: guide channel lists
//! (TSV rows `site`, `lang`, `display_name`, `xmltv_id`) against an M3U whose
//! `tvg-id`s name the same channels. The ids are stripped before matching.
//!
//! Most rows (61,034 of 72,499 in the public set) carry no id, and many of those are
//! the very channels that a labelled row of another site lists under the same name.
//! The matcher cannot tell rows with the same name apart (they have the same
//! features), so a match is judged by its name: the ids known for the chosen name
//! (every row whose name has the same features) decide. Right: they are exactly the
//! entry's id. Wrong: any other id is among them (a name that means two channels is
//! wrong even when one of them is right). Unverifiable: no row of that name carries
//! an id; counted neither right nor wrong, so it lowers recall. `strict` counts the
//! chosen row alone (its own id, none counting as wrong), for comparison.
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
            names: vec![name.to_string()],
            country: site_country(site),
            lang: Some(lang.trim().to_string()).filter(|l| !l.is_empty()),
        });
        answers.push(base_id(cols.next().unwrap_or_default()));
    }
    GuideSet { channels, answers }
}

/// A guide site's country: its domain's last part when that is a country code
/// (`freeview.co.uk` → uk, `mewatch.sg` → sg; `dstv.com` none). What a site is known
/// for, as a guide source configured for one country would be; never the answer.
fn site_country(site: &str) -> Option<String> {
    let tld = site.rsplit('.').next()?.to_ascii_lowercase();
    features::of_tvg_id(&format!("X.{tld}")).and_then(|f| f.country)
}

/// One M3U entry: its name and its (to be stripped) id.
pub struct Entry {
    pub name: String,
    pub answer: String,
}

/// The `#EXTINF` entries of an M3U: the name after the last comma, the `tvg-id`.
pub fn entries(m3u: &str) -> Vec<Entry> {
    m3u.lines()
        .filter_map(|l| l.strip_prefix("#EXTINF"))
        .map(|l| {
            let answer = l
                .split_once("tvg-id=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(id, _)| base_id(id))
                .unwrap_or_default();
            let name = l.rsplit_once(',').map_or("", |(_, n)| n).trim().to_string();
            Entry { name, answer }
        })
        .collect()
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
    /// Up to 100 wrong matches (those without an answer too): (entry name, guide name chosen, right id, chosen id).
    pub wrong_examples: Vec<(String, String, String, String)>,
}

impl Report {
    pub fn precision(&self) -> f64 {
        self.right as f64 / (self.right + self.wrong).max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        self.right as f64 / self.with_answer.max(1) as f64
    }

    pub fn strict_precision(&self) -> f64 {
        self.strict_right as f64 / (self.strict_right + self.strict_wrong).max(1) as f64
    }
}

/// Matches the split's entries (names only) against `guide` and counts.
pub fn evaluate(
    guide: &GuideSet,
    index: &Index,
    entries: &[Entry],
    split: Split,
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
    let mut r = Report::default();
    for (pos, e) in entries.iter().enumerate() {
        if !split.keeps(pos) {
            continue;
        }
        r.entries += 1;
        let has_answer = !e.answer.is_empty() && known.contains(e.answer.as_str());
        let q = Query {
            names: vec![e.name.clone()],
            ..Query::default()
        };
        let out = index.find(&q, &none, settings);
        match (out.chosen, has_answer) {
            (None, true) => r.unmatched += 1,
            (None, false) => {}
            (Some(c), false) => {
                r.matched_without_answer += 1;
                let ids = ids_of_name.get(&name_key(&c.name));
                if !e.answer.is_empty()
                    && ids.is_some_and(|ids| !ids.is_empty() && !ids.contains(e.answer.as_str()))
                {
                    r.wrong_without_answer += 1;
                    if r.wrong_examples.len() < 100 {
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
                }
                let ids = ids_of_name.get(&name_key(&c.name));
                match ids {
                    None => r.unverifiable += 1,
                    Some(ids) if ids.is_empty() => r.unverifiable += 1,
                    Some(ids) if ids.len() == 1 && ids.contains(e.answer.as_str()) => r.right += 1,
                    Some(ids) => {
                        r.wrong += 1;
                        if r.wrong_examples.len() < 100 {
                            let got = ids.iter().copied().collect::<Vec<_>>().join(" ");
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
        #EXTINF:-1 tvg-id=\"ITV.uk\",ITV +1\nhttp://x/2\n\
        #EXTINF:-1 tvg-id=\"KidoodleTV.ca\",Kidoodle TV [Geo-blocked]\nhttp://x/3\n\
        #EXTINF:-1 tvg-id=\"Film4.uk\",Film 4 (720p)\nhttp://x/4\n\
        #EXTINF:-1 tvg-id=\"\",Unknown TV\nhttp://x/5\n";

    #[test]
    fn counts_right_wrong_and_unmatched_by_name() {
        let guide = guide_set(TSV, None);
        assert_eq!(guide.answers[0], "BBCOne.uk");
        let index = Index::new(&guide.channels);
        let r = evaluate(
            &guide,
            &index,
            &entries(M3U),
            Split::All,
            Settings::default(),
        );
        assert_eq!(r.with_answer, 4);
        // BBC One and Film 4 right; "Kidoodle TV" names two channels (in guides of no
        // known country, one language: the matcher cannot tell): wrong; the "+1"
        // never takes ITV: unmatched.
        assert_eq!((r.right, r.wrong, r.unmatched), (2, 1, 1), "{r:?}");
        assert!((r.precision() - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.recall() - 0.5).abs() < 1e-9);
    }
}
