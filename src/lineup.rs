//! The lineup: channels of every enabled service merged into one list (SPEC section 3).
//!
//! Pure: takes the channel lists (already in priority order) and returns merged
//! channels with their sources; stable ids and numbers are assigned by the caller from
//! the store, keyed by `Merged::merge_key`. Two channels are the same when their
//! `tvg_id`s are equal, else when their normalised names are (case, accents,
//! punctuation and quality suffixes like "HD" ignored).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

use crate::model::{Channel, LineupChannel, Source};

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
    pub name: String,
    pub logo: String,
    pub group: String,
    pub tags: Vec<String>,
    pub tvg_id: String,
    pub sources: Vec<Source>,
}

/// Quality and format suffixes that do not make a different channel.
const QUALITY_SUFFIXES: &[&str] = &[
    "hd", "fhd", "uhd", "4k", "sd", "hevc", "h265", "1080p", "720p", "backup",
];

/// Lowercase ASCII words of `name`, accents folded, punctuation dropped, quality
/// suffixes removed: `"Télé-Sport  HD"` → `"tele sport"`.
pub fn normalise(name: &str) -> String {
    let folded = deunicode::deunicode(name).to_lowercase();
    // Bracketed notes like "(backup)" or "[geo-blocked]" are not part of the name.
    static BRACKETS: OnceLock<Regex> = OnceLock::new();
    let brackets =
        BRACKETS.get_or_init(|| Regex::new(r"\([^)]*\)|\[[^\]]*\]").expect("static regex"));
    let folded = brackets.replace_all(&folded, " ");
    let mut words: Vec<&str> = folded
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '+')
        .filter(|w| !w.is_empty())
        .collect();
    while words.len() > 1 && words.last().is_some_and(|w| QUALITY_SUFFIXES.contains(w)) {
        words.pop();
    }
    words.join(" ")
}

/// URL- and file-safe id from a name: `"BBC One HD"` → `"bbc-one"`.
pub fn slugify(name: &str) -> String {
    let n = normalise(name);
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

/// The guide id: the upstream tvg-id when it already has XMLTV's `name.domain` form,
/// else one derived from it or the slug, under `.freesky`.
pub fn guide_id(tvg_id: &str, slug: &str) -> String {
    static FORM: OnceLock<Regex> = OnceLock::new();
    let form = FORM.get_or_init(|| {
        Regex::new(r"^[A-Za-z0-9][-A-Za-z0-9_]*(\.[-A-Za-z0-9_]+)+$").expect("static regex")
    });
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
pub fn merge(lists: &[ServiceChannels<'_>]) -> Vec<Merged> {
    let mut order: Vec<&ServiceChannels<'_>> = lists.iter().collect();
    order.sort_by_key(|l| l.priority); // stable: ties keep config order
    let mut merged: Vec<Merged> = Vec::new();
    let mut by_tvg: HashMap<String, usize> = HashMap::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for list in order {
        for ch in list.channels {
            let norm = normalise(&ch.name);
            let tvg = ch.tvg_id.trim().to_lowercase();
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
                service: list.service.to_string(),
                channel_id: ch.id.clone(),
                name: ch.name.clone(),
                priority: list.priority,
            };
            let i = match found {
                Some(i) => {
                    let m = &mut merged[i];
                    // Two entries of one service with the same name are usually quality
                    // variants or backups: both stay, as sources tried in turn.
                    if m.sources
                        .iter()
                        .any(|s| s.service == source.service && s.channel_id == source.channel_id)
                    {
                        continue;
                    }
                    m.sources.push(source);
                    if m.logo.is_empty() {
                        m.logo = ch.logo.clone();
                    }
                    if m.group.is_empty() {
                        m.group = ch.group.clone();
                    }
                    if m.tvg_id.is_empty() && !tvg.is_empty() {
                        m.tvg_id = ch.tvg_id.trim().to_string();
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
                    merged.push(Merged {
                        merge_key,
                        wanted_slug: slugify(&ch.name),
                        name: ch.name.trim().to_string(),
                        logo: ch.logo.clone(),
                        group: ch.group.clone(),
                        tags: ch.tags.clone(),
                        tvg_id: ch.tvg_id.trim().to_string(),
                        sources: vec![source],
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
    merged
}

/// The merged lineup with its lookups.
#[derive(Debug, Default)]
pub struct Lineup {
    /// Ordered by channel number.
    pub channels: Vec<LineupChannel>,
    by_id: HashMap<String, usize>,
    by_number: HashMap<u32, usize>,
}

impl Lineup {
    pub fn new(mut channels: Vec<LineupChannel>) -> Self {
        channels.sort_by_key(|c| c.number);
        let by_id = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        let by_number = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.number, i))
            .collect();
        Self {
            channels,
            by_id,
            by_number,
        }
    }

    /// A channel by slug, or by number (`"12"`).
    pub fn get(&self, id: &str) -> Option<&LineupChannel> {
        self.by_id
            .get(id)
            .or_else(|| id.parse::<u32>().ok().and_then(|n| self.by_number.get(&n)))
            .map(|&i| &self.channels[i])
    }

    /// A channel by its number only (tuner URLs: a numeric slug must not shadow it).
    pub fn by_number(&self, number: u32) -> Option<&LineupChannel> {
        self.by_number.get(&number).map(|&i| &self.channels[i])
    }

    /// Channels whose name, group or tags contain `query`, ignoring case and accents.
    pub fn search(&self, query: &str) -> Vec<&LineupChannel> {
        let q = fold(query);
        let q = q.trim();
        self.channels
            .iter()
            .filter(|c| {
                q.is_empty()
                    || fold(&c.name).contains(q)
                    || fold(&c.group).contains(q)
                    || c.tags.iter().any(|t| fold(t).contains(q))
            })
            .collect()
    }
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
            service: service.into(),
            headers: vec![],
            url: None,
        }
    }

    #[test]
    fn normalise_ignores_case_accents_punctuation_quality() {
        for (input, want) in [
            ("Télé-Sport  HD", "tele sport"),
            ("BBC ONE FHD", "bbc one"),
            ("bbc.one", "bbc one"),
            ("Canal+ 4K", "canal+"),
            ("News (backup)", "news"),
            ("HD", "hd"),
        ] {
            assert_eq!(normalise(input), want, "{input}");
        }
        assert_eq!(slugify("Canal+ Sport HD"), "canalplus-sport");
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
        let m = merge(&lists);
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
    fn search_folds_case_and_accents() {
        let chans = ["Télé Matin", "News"]
            .iter()
            .enumerate()
            .map(|(i, n)| LineupChannel {
                id: slugify(n),
                number: i as u32 + 1,
                name: n.to_string(),
                logo: String::new(),
                group: if i == 1 {
                    "Actualités".into()
                } else {
                    String::new()
                },
                tags: vec![],
                guide_id: String::new(),
                sources: vec![],
            })
            .collect();
        let l = Lineup::new(chans);
        assert_eq!(l.search("TELE").len(), 1);
        assert_eq!(l.search("actualites")[0].name, "News");
        assert_eq!(l.get("2").map(|c| c.name.as_str()), Some("News"));
        assert_eq!(l.get("tele-matin").map(|c| c.number), Some(1));
    }
}
