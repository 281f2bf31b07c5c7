//! The match table: for every lineup channel, which guide channel gives it programmes
//! and why. Precedence, highest first: a match by id (the channel's tvg-id or guide
//! id, which the mapping API's guide id override sets), an admin's decision (pick,
//! reject, confirm), a match by display name in a guide, then the matcher's automatic
//! match. Pure: built from the guides' channel lists and what their last read matched.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::features;
use super::matcher::{GuideChannel, Index, Query, Settings};
use crate::lineup::{normalise, shift_of};

/// An admin's decision about one lineup channel, as kept in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Decision {
    /// Keep this guide channel (the match shown when confirming).
    Confirm { source: String, guide_id: String },
    /// No guide channel: the channel gets no programmes from matching.
    Reject,
    /// This guide channel, chosen by hand.
    Pick { source: String, guide_id: String },
}

impl Decision {
    /// The guide channel (its guide, its id) a confirmation or a pick gives.
    pub fn guide_channel(&self) -> Option<(&str, &str)> {
        match self {
            Self::Confirm { source, guide_id } | Self::Pick { source, guide_id } => {
                Some((source, guide_id))
            }
            Self::Reject => None,
        }
    }
}

/// Whether two (guide, guide id) pairs name one guide channel (ids in any case, as
/// guides are read).
pub fn same_guide_channel(a: (&str, &str), b: (&str, &str)) -> bool {
    a.0 == b.0 && a.1.eq_ignore_ascii_case(b.1)
}

/// How a lineup channel got its guide channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// A guide knows it by id or by its display name.
    Exact,
    /// The matcher chose it.
    Auto,
    Confirmed,
    Rejected,
    Picked,
    Unmatched,
}

/// One guide channel offered as an alternative.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alternative {
    pub guide_id: String,
    pub name: String,
    pub score: f32,
    /// The guide it is in (a service's name, or an extra guide's).
    pub source: String,
}

/// One lineup channel's line of the table.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// The lineup channel's id (slug).
    pub channel: String,
    pub name: String,
    /// The guide channel's XMLTV id in its guide; `None` when unmatched or rejected.
    pub guide_id: Option<String>,
    /// The guide it is in.
    pub source: Option<String>,
    /// The matcher's score (1.0 for an exact match); `None` for decisions and
    /// channels without a match.
    pub score: Option<f32>,
    pub state: State,
    /// Why: the score and the features that decided, or the decision.
    pub reason: String,
    /// The best candidates the matcher found, best first.
    pub alternatives: Vec<Alternative>,
    /// A decision's guide channel that its guide does not list now: the channel has
    /// no programmes until it is back (or another decision is made).
    pub gone: bool,
    /// Its guide lists it by id (its tvg-id or guide id): no decision overrides that
    /// (its guide id, `PATCH /api/channels/{id}` with `tvg_id`, does).
    pub by_id: bool,
}

/// What is known of one lineup channel.
#[derive(Debug, Clone, Default)]
pub struct ChannelInfo {
    pub id: String,
    pub name: String,
    pub group: String,
    pub guide_id: String,
    /// Its sources' names.
    pub source_names: Vec<String>,
    /// Its sources' stream addresses, where their listings give them (M3U): a
    /// country-code domain hints its country (`Query::urls`).
    pub urls: Vec<String>,
    /// Its guide id is set by hand (the channel mapping): only a guide channel of
    /// that id may give it programmes, never a decision or the matcher.
    pub pinned: bool,
}

/// One guide's channels: (XMLTV id, display names), in document order.
pub struct Catalogue<'a> {
    pub source: &'a str,
    pub channels: &'a [(String, Vec<String>)],
    /// Each channel's language, where its guide gives one (by id).
    pub langs: &'a HashMap<String, String>,
    /// The country the guide is made for (`[[guides]] country`), when known.
    pub region: Option<&'a str>,
}

/// A match found by the guide reads themselves: lineup channel → (source, guide id,
/// by id rather than by name).
pub type Found = HashMap<String, (String, String, bool)>;

/// The table, in lineup order.
#[derive(Debug, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
    by_channel: HashMap<String, usize>,
    /// (guide, guide channel id lowercase) → the lineup channel its guide gives it to
    /// by id: no decision can take it from that channel.
    by_id: HashMap<(String, String), String>,
}

impl Table {
    pub fn get(&self, channel: &str) -> Option<&Entry> {
        self.by_channel.get(channel).map(|&i| &self.entries[i])
    }

    /// The lineup channel that guide `source` gives its channel `guide_id` to by id.
    pub fn held_by_id(&self, source: &str, guide_id: &str) -> Option<&str> {
        self.by_id
            .get(&(source.to_string(), guide_id.to_lowercase()))
            .map(String::as_str)
    }

    /// Guide channel id (lowercase) → lineup channel, of `source`'s channels that a
    /// decision or the matcher gave to a lineup channel: what its next read keeps.
    pub fn assigned(&self, source: &str) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .filter(|e| {
                matches!(e.state, State::Auto | State::Confirmed | State::Picked)
                    && e.source.as_deref() == Some(source)
            })
            .filter_map(|e| Some((e.guide_id.as_ref()?.to_lowercase(), e.channel.clone())))
            .collect()
    }
}

/// Builds the table. `catalogues` come in priority order; `found` says what the reads
/// matched themselves; `decisions` are the admin's.
pub fn build(
    channels: &[ChannelInfo],
    catalogues: &[Catalogue<'_>],
    found: &Found,
    decisions: &HashMap<String, Decision>,
    settings: Settings,
) -> Table {
    let mut all: Vec<GuideChannel> = Vec::new();
    let mut position: HashMap<(&str, String), usize> = HashMap::new();
    // A guide that lists exactly what an earlier one lists (two services reading one
    // XMLTV) is that guide's twin: its channels stay its own (a decision may give
    // each guide's to another lineup channel), but an alternative is not listed twice.
    let mut twin_of: HashMap<&str, &str> = HashMap::new();
    for (k, c) in catalogues.iter().enumerate() {
        let first = catalogues[..k]
            .iter()
            .find(|e| e.channels == c.channels && e.langs == c.langs && e.region == c.region)
            .map_or(c.source, |e| e.source);
        twin_of.insert(c.source, first);
    }
    for c in catalogues {
        for (id, names) in c.channels {
            position
                .entry((c.source, id.to_lowercase()))
                .or_insert(all.len());
            all.push(GuideChannel {
                source: c.source.to_string(),
                id: id.clone(),
                names: names.clone(),
                // An XMLTV id's domain is the channel's country (`ATV.tr`).
                country: features::of_tvg_id(id).and_then(|f| f.country),
                lang: c.langs.get(id).cloned(),
                region: c.region.map(str::to_string),
            });
        }
    }
    let name_of = |source: &str, id: &str| -> Option<usize> {
        position.get(&(source, id.to_lowercase())).copied()
    };
    let index = Index::new(&all);
    let mut taken: HashSet<usize> = HashSet::new();
    // Who took each taken guide channel, and how: for the reason of a channel whose
    // best candidate it was.
    let mut owner: HashMap<usize, (usize, &'static str)> = HashMap::new();
    let mut entries: Vec<Option<Entry>> = vec![None; channels.len()];
    let mut by_id: HashMap<(String, String), String> = HashMap::new();
    let entry =
        |c: &ChannelInfo, state, guide: Option<(&str, &str)>, score, reason: String| Entry {
            channel: c.id.clone(),
            name: c.name.clone(),
            guide_id: guide.map(|(_, id)| id.to_string()),
            source: guide.map(|(s, _)| s.to_string()),
            score,
            state,
            reason,
            alternatives: Vec::new(),
            gone: false,
            by_id: false,
        };
    // Matches by id, then decisions, then matches by name: each pass over the whole
    // lineup, so a guide channel that goes by id goes so wherever its channel stands.
    for (i, c) in channels.iter().enumerate() {
        let exact = found.get(&c.id);
        if let Some((source, id, true)) = exact {
            by_id.insert((source.clone(), id.to_lowercase()), c.id.clone());
            if let Some(n) = name_of(source, id) {
                taken.insert(n);
                owner.insert(n, (i, "its guide lists it by id"));
            }
            entries[i] = Some(Entry {
                by_id: true,
                ..entry(
                    c,
                    State::Exact,
                    Some((source, id)),
                    Some(1.0),
                    format!("guide `{source}` lists it by id `{id}`"),
                )
            });
            continue;
        }
        // A hand-set guide id no guide lists: the matcher does not guess for it, but
        // a guide channel carrying its display name still gives it programmes (a
        // guide read maps it so).
        if c.pinned && !matches!(exact, Some((_, _, false))) {
            entries[i] = Some(entry(
                c,
                State::Unmatched,
                None,
                None,
                format!(
                    "its guide id `{}` is set by the channel mapping, and no guide lists it",
                    c.guide_id
                ),
            ));
        }
    }
    for (i, c) in channels.iter().enumerate() {
        if entries[i].is_some() || c.pinned {
            continue;
        }
        let decision = decisions.get(&c.id);
        let Some((source, guide_id)) = decision.and_then(Decision::guide_channel) else {
            if decision == Some(&Decision::Reject) {
                entries[i] = Some(entry(
                    c,
                    State::Rejected,
                    None,
                    None,
                    "rejected by an admin".into(),
                ));
            }
            continue;
        };
        let picked = matches!(decision, Some(Decision::Pick { .. }));
        let (state, what) = if picked {
            (State::Picked, "picked")
        } else {
            (State::Confirmed, "confirmed")
        };
        let n = name_of(source, guide_id);
        // Another channel has it already (by id, or an earlier decision kept from
        // before a pick took decisions over): this one waits, unassigned, saying why.
        if let Some(whose) = n.and_then(|n| whose(&owner, channels, n)) {
            let why = format!("{what} by an admin as `{guide_id}` of guide `{source}`, {whose}");
            entries[i] = Some(entry(c, State::Unmatched, None, None, why));
            continue;
        }
        // A confirmation was of the matcher's match for the name the channel had: a
        // channel renamed since to a time-shift ("Film 4" to "Film 4 +1") or from one
        // would keep a guide an hour off. It waits for a new decision. (A pick is the
        // admin's own choice, whatever the names.)
        if let (false, Some(n)) = (picked, n) {
            let shift = shift_of(&normalise(&c.name));
            if !all[n]
                .names
                .iter()
                .any(|x| shift_of(&normalise(x)) == shift)
            {
                let why = format!(
                    "confirmed by an admin as `{guide_id}` of guide `{source}` (\"{}\") under another name: its name `{}` is {} and that guide channel's is not; confirm or pick again",
                    all[n].names.first().map_or("", String::as_str),
                    c.name,
                    if shift > 0 { "a time-shift" } else { "no time-shift" },
                );
                let mut line = entry(c, State::Unmatched, None, None, why);
                line.gone = true;
                entries[i] = Some(line);
                continue;
            }
        }
        // Gone: its guide was read and does not list it (a guide not read yet says
        // nothing of it).
        let read = catalogues.iter().any(|c| c.source == source);
        let gone = n.is_none() && read;
        let reason = match n {
            Some(n) => {
                taken.insert(n);
                owner.insert(
                    n,
                    (
                        i,
                        if picked {
                            "picked by an admin"
                        } else {
                            "confirmed by an admin"
                        },
                    ),
                );
                format!("{what} by an admin")
            }
            None if read => format!("{what} by an admin; guide `{source}` does not list it now"),
            None => format!("{what} by an admin; guide `{source}` has not been read yet"),
        };
        let mut line = entry(c, state, Some((source, guide_id)), None, reason);
        line.gone = gone;
        entries[i] = Some(line);
    }
    for (i, c) in channels.iter().enumerate() {
        if entries[i].is_some() || (!c.pinned && decisions.contains_key(&c.id)) {
            continue;
        }
        if let Some((source, id, false)) = found.get(&c.id) {
            let n = name_of(source, id);
            if let Some(whose) = n.and_then(|n| whose(&owner, channels, n)) {
                let why = format!("its guide `{source}` lists `{id}` by its display name, {whose}");
                entries[i] = Some(entry(c, State::Unmatched, None, None, why));
                continue;
            }
            if let Some(n) = n {
                taken.insert(n);
                owner.insert(n, (i, "its guide lists it by that display name"));
            }
            entries[i] = Some(entry(
                c,
                State::Exact,
                Some((source, id)),
                Some(1.0),
                format!("guide `{source}` lists it by its display name"),
            ));
        }
    }
    // The matcher, for the rest; a guide channel goes to one lineup channel only,
    // the one it scores best for (the first in lineup order among equals).
    let mut auto: Vec<(usize, f32, usize, super::Outcome)> = Vec::new();
    for (i, c) in channels.iter().enumerate() {
        let query = Query {
            names: std::iter::once(c.name.clone())
                .chain(c.source_names.iter().cloned())
                .collect(),
            tvg_ids: vec![c.guide_id.clone()],
            group: c.group.clone(),
            urls: c.urls.clone(),
        };
        let outcome = index.find(&query, &taken, settings);
        let alternatives: Vec<Alternative> = outcome
            .alternatives
            .iter()
            .map(|s| Alternative {
                guide_id: all[s.channel].id.clone(),
                name: s.name.clone(),
                score: round(s.score),
                source: all[s.channel].source.clone(),
            })
            .collect();
        match &mut entries[i] {
            Some(e) => {
                // A decision keeps the score the matcher gives its guide channel.
                if e.score.is_none() {
                    let own = e
                        .source
                        .as_deref()
                        .zip(e.guide_id.as_deref())
                        .and_then(|(s, g)| name_of(s, g));
                    e.score = own.and_then(|n| index.score_of(&query, n)).map(round);
                }
                e.alternatives = alternatives;
            }
            slot @ None => {
                let reason = match outcome
                    .taken
                    .as_ref()
                    .and_then(|t| Some((t, owner.get(&t.channel)?)))
                {
                    Some((t, &(other, how))) => format!(
                        "its best guide channel `{}` (\"{}\", score {:.2}) is `{}`'s: {how}",
                        all[t.channel].id, t.name, t.score, channels[other].id
                    ),
                    None => outcome.reason.clone(),
                };
                let mut e = entry(c, State::Unmatched, None, None, reason);
                e.alternatives = alternatives;
                *slot = Some(e);
                if let Some(chosen) = &outcome.chosen {
                    auto.push((i, chosen.score, chosen.channel, outcome));
                }
            }
        }
    }
    auto.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut winner: HashMap<usize, usize> = HashMap::new();
    for (i, score, guide, outcome) in auto {
        let Some(e) = entries[i].as_mut() else {
            continue;
        };
        if let Some(&other) = winner.get(&guide) {
            e.reason = format!(
                "its best guide channel `{}` went to `{}`, a better match",
                all[guide].id, channels[other].id
            );
            continue;
        }
        winner.insert(guide, i);
        e.state = State::Auto;
        e.guide_id = Some(all[guide].id.clone());
        e.source = Some(all[guide].source.clone());
        e.score = Some(round(score));
        e.reason = outcome.reason;
    }
    let mut entries: Vec<Entry> = entries.into_iter().flatten().collect();
    // The alternatives are the others: not the guide channel the entry has, nor its
    // twin in a twin guide, and each guide channel and its twins listed once.
    let key = |source: &str, id: &str| {
        let source = twin_of.get(source).copied().unwrap_or(source).to_string();
        (source, id.to_lowercase())
    };
    for e in &mut entries {
        let own = e
            .source
            .as_deref()
            .zip(e.guide_id.as_deref())
            .map(|(s, g)| key(s, g));
        let mut seen: HashSet<(String, String)> = own.into_iter().collect();
        e.alternatives
            .retain(|a| seen.insert(key(&a.source, &a.guide_id)));
    }
    let by_channel = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.channel.clone(), i))
        .collect();
    Table {
        entries,
        by_channel,
        by_id,
    }
}

/// "which is `{channel}`'s: {how}" of guide channel `n` when a lineup channel took it.
fn whose(
    owner: &HashMap<usize, (usize, &'static str)>,
    channels: &[ChannelInfo],
    n: usize,
) -> Option<String> {
    let &(other, how) = owner.get(&n)?;
    Some(format!("which is `{}`'s: {how}", channels[other].id))
}

/// Channels whose decisions keep display names from matching them.
pub fn decided(decisions: &HashMap<String, Decision>) -> BTreeSet<String> {
    decisions.keys().cloned().collect()
}

/// Two decimals, never below 0 (nor `-0.0`, which JSON shows as such).
fn round(score: f32) -> f32 {
    let r = (score * 100.0).round() / 100.0;
    if r > 0.0 {
        r
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_show_two_decimals_never_below_zero() {
        assert_eq!(round(0.8765), 0.88);
        assert_eq!(round(-0.001).to_string(), "0");
        assert_eq!(round(-0.3).to_string(), "0");
    }

    /// The decisions where an admin picked guide channel `guide_id` of `source` for
    /// `channel`.
    fn picked(channel: &str, source: &str, guide_id: &str) -> HashMap<String, Decision> {
        let pick = Decision::Pick {
            source: source.into(),
            guide_id: guide_id.into(),
        };
        [(channel.to_string(), pick)].into()
    }

    fn info(id: &str, name: &str) -> ChannelInfo {
        ChannelInfo {
            id: id.into(),
            name: name.into(),
            guide_id: format!("{id}.freesky"),
            ..ChannelInfo::default()
        }
    }

    #[test]
    fn precedence_and_one_guide_channel_per_lineup_channel() {
        let g: Vec<(String, Vec<String>)> = vec![
            ("a".into(), vec!["Alpha".into()]),
            ("b".into(), vec!["BBC One HD".into()]),
            ("c".into(), vec!["Gamma".into()]),
        ];
        let cats = [Catalogue {
            source: "s",
            channels: &g,
            langs: &HashMap::new(),
            region: None,
        }];
        let channels = [
            info("alpha", "Alpha"),
            info("bbc", "BBCOne"),
            info("bbc1", "BBC 1"),
            info("gamma", "Gamma"),
        ];
        let found: Found = [("alpha".to_string(), ("s".into(), "a".into(), true))].into();
        let decisions: HashMap<String, Decision> = [("gamma".to_string(), Decision::Reject)].into();
        let t = build(&channels, &cats, &found, &decisions, Settings::default());
        let state = |c: &str| t.get(c).unwrap().state;
        assert_eq!(state("alpha"), State::Exact);
        assert!(t.get("alpha").unwrap().by_id);
        assert_eq!(state("bbc"), State::Auto);
        assert!(!t.get("bbc").unwrap().by_id);
        assert_eq!(
            state("bbc1"),
            State::Unmatched,
            "{}",
            t.get("bbc1").unwrap().reason
        );
        assert_eq!(state("gamma"), State::Rejected);
        assert_eq!(
            t.assigned("s"),
            [("b".to_string(), "bbc".to_string())].into()
        );
    }

    /// Two services reading one XMLTV: its channels are one set of candidates (the
    /// first guide's), not twins that make every name ambiguous and every alternative
    /// listed twice; a decision naming the second guide still finds its channel.
    #[test]
    fn a_guide_read_by_two_services_is_one_set_of_candidates() {
        let g: Vec<(String, Vec<String>)> = vec![
            ("one.uk".into(), vec!["BBC One".into()]),
            ("one-hd.uk".into(), vec!["BBC One HD".into()]),
            ("two.uk".into(), vec!["BBC Two".into()]),
        ];
        let langs = HashMap::new();
        let cat = |source| Catalogue {
            source,
            channels: &g,
            langs: &langs,
            region: None,
        };
        let cats = [cat("s"), cat("t")];
        let channels = [info("bbc1", "BBC One"), info("bbc2", "BBC Two")];
        let decisions = picked("bbc2", "t", "two.uk");
        let t = build(
            &channels,
            &cats,
            &Found::new(),
            &decisions,
            Settings::default(),
        );
        let one = t.get("bbc1").unwrap();
        assert_eq!(one.state, State::Auto, "{one:?}");
        assert_eq!(one.source.as_deref(), Some("s"), "{one:?}");
        assert_eq!(one.guide_id.as_deref(), Some("one.uk"), "{one:?}");
        let listed: Vec<(&str, &str)> = one
            .alternatives
            .iter()
            .map(|a| (a.source.as_str(), a.guide_id.as_str()))
            .collect();
        assert_eq!(listed, [("s", "one-hd.uk")], "{one:?}");
        let two = t.get("bbc2").unwrap();
        assert_eq!(two.state, State::Picked, "{two:?}");
        assert!(!two.gone, "{two:?}");
        assert_eq!(
            t.assigned("t"),
            [("two.uk".to_string(), "bbc2".to_string())].into()
        );
    }

    #[test]
    fn a_pick_is_gone_only_when_its_guide_was_read_without_it() {
        let g: Vec<(String, Vec<String>)> = vec![("a".into(), vec!["Alpha".into()])];
        let cats = [Catalogue {
            source: "s",
            channels: &g,
            langs: &HashMap::new(),
            region: None,
        }];
        let channels = [info("x", "X"), info("y", "Y")];
        let pick = |source: &str| Decision::Pick {
            source: source.into(),
            guide_id: "old".into(),
        };
        let decisions: HashMap<String, Decision> = [
            ("x".to_string(), pick("s")),
            ("y".to_string(), pick("unread")),
        ]
        .into();
        let t = build(
            &channels,
            &cats,
            &Found::new(),
            &decisions,
            Settings::default(),
        );
        let (x, y) = (t.get("x").unwrap(), t.get("y").unwrap());
        assert!(x.gone && x.reason.contains("does not list it now"), "{x:?}");
        assert!(
            !y.gone && y.reason.contains("has not been read yet"),
            "{y:?}"
        );
    }

    #[test]
    fn a_confirmation_does_not_outlive_a_rename_to_a_time_shift_but_a_pick_does() {
        let g: Vec<(String, Vec<String>)> = vec![
            ("Film4.uk".into(), vec!["Film 4".into()]),
            ("More4.uk".into(), vec!["More 4".into()]),
            ("E4.uk".into(), vec!["E4".into()]),
        ];
        let cats = [Catalogue {
            source: "s",
            channels: &g,
            langs: &HashMap::new(),
            region: None,
        }];
        let channels = [
            info("film", "Film 4 +1"),
            info("more", "More 4 +1"),
            info("e4", "E4 HD"),
        ];
        let confirm = |id: &str| Decision::Confirm {
            source: "s".into(),
            guide_id: id.into(),
        };
        let decisions: HashMap<String, Decision> = [
            ("film".to_string(), confirm("Film4.uk")),
            (
                "more".to_string(),
                Decision::Pick {
                    source: "s".into(),
                    guide_id: "More4.uk".into(),
                },
            ),
            ("e4".to_string(), confirm("E4.uk")),
        ]
        .into();
        let t = build(
            &channels,
            &cats,
            &Found::new(),
            &decisions,
            Settings::default(),
        );
        let film = t.get("film").unwrap();
        assert_eq!(film.state, State::Unmatched, "{film:?}");
        assert!(
            film.gone && film.reason.contains("a time-shift"),
            "{film:?}"
        );
        assert!(t.assigned("s").values().all(|c| c != "film"));
        assert_eq!(t.get("more").unwrap().state, State::Picked);
        assert_eq!(t.get("e4").unwrap().state, State::Confirmed);
    }

    #[test]
    fn a_guide_channel_two_decisions_or_an_id_claim_goes_to_one_channel() {
        let g: Vec<(String, Vec<String>)> = vec![
            ("a".into(), vec!["Alpha".into()]),
            ("b".into(), vec!["Beta".into()]),
        ];
        let cats = [Catalogue {
            source: "s",
            channels: &g,
            langs: &HashMap::new(),
            region: None,
        }];
        let pick = |id: &str| Decision::Pick {
            source: "s".into(),
            guide_id: id.into(),
        };
        // Two stored decisions of "a" (kept from before a pick took others' over), and
        // a pick of "b", which a channel later in the lineup has by id.
        let channels = [
            info("one", "One"),
            info("two", "Two"),
            info("three", "Three"),
            info("four", "Four"),
        ];
        let found: Found = [("four".to_string(), ("s".into(), "B".into(), true))].into();
        let decisions: HashMap<String, Decision> = [
            ("one".to_string(), pick("b")),
            ("two".to_string(), pick("a")),
            (
                "three".to_string(),
                Decision::Confirm {
                    source: "s".into(),
                    guide_id: "A".into(),
                },
            ),
        ]
        .into();
        let t = build(&channels, &cats, &found, &decisions, Settings::default());
        let line = |c: &str| t.get(c).unwrap();
        assert_eq!(line("two").state, State::Picked);
        assert_eq!(line("four").state, State::Exact);
        for (waits, holder) in [("one", "four"), ("three", "two")] {
            let e = line(waits);
            assert_eq!(e.state, State::Unmatched, "{waits}: {}", e.reason);
            assert!(e.guide_id.is_none(), "{waits}");
            assert!(e.reason.contains(&format!("`{holder}`'s")), "{}", e.reason);
        }
        // (What a guide lists by id it maps itself: not an assignment.)
        assert_eq!(
            t.assigned("s"),
            [("a".to_string(), "two".to_string())].into()
        );
    }

    #[test]
    fn a_hand_set_guide_id_keeps_a_display_name_match_but_no_guess_nor_decision() {
        let g: Vec<(String, Vec<String>)> = vec![
            ("d".into(), vec!["Demo".into()]),
            ("b".into(), vec!["BBC One HD".into()]),
        ];
        let cats = [Catalogue {
            source: "s",
            channels: &g,
            langs: &HashMap::new(),
            region: None,
        }];
        let pinned = |id: &str, name: &str| ChannelInfo {
            pinned: true,
            ..info(id, name)
        };
        let channels = [pinned("demo", "Demo"), pinned("bbc", "BBCOne")];
        // The read gave "demo" its guide channel by display name.
        let found: Found = [("demo".to_string(), ("s".into(), "d".into(), false))].into();
        let decisions = picked("bbc", "s", "b");
        let t = build(&channels, &cats, &found, &decisions, Settings::default());
        let demo = t.get("demo").unwrap();
        assert_eq!(demo.state, State::Exact, "{}", demo.reason);
        assert_eq!(demo.guide_id.as_deref(), Some("d"));
        assert!(!demo.by_id, "by display name: a decision overrides it");
        let bbc = t.get("bbc").unwrap();
        assert_eq!(bbc.state, State::Unmatched, "{}", bbc.reason);
        assert!(bbc.reason.contains("channel mapping"), "{}", bbc.reason);
        assert!(t.assigned("s").is_empty());
    }

    #[test]
    fn a_channel_whose_best_guide_channel_was_picked_for_another_says_so() {
        let g: Vec<(String, Vec<String>)> = vec![
            ("BBC1.uk".into(), vec!["BBC One".into()]),
            ("Other.uk".into(), vec!["Sky Sports".into()]),
        ];
        let cats = [Catalogue {
            source: "s",
            channels: &g,
            langs: &HashMap::new(),
            region: None,
        }];
        let channels = [
            info("bbc-one", "BBC One"),
            info("sky", "Sky Sports Main Event"),
        ];
        let decisions = picked("sky", "s", "BBC1.uk");
        let t = build(
            &channels,
            &cats,
            &Found::default(),
            &decisions,
            Settings::default(),
        );
        let bbc = t.get("bbc-one").unwrap();
        assert_eq!(bbc.state, State::Unmatched);
        assert_eq!(
            bbc.reason,
            "its best guide channel `BBC1.uk` (\"BBC One\", score 1.00) is `sky`'s: picked by an admin"
        );
        assert_eq!(t.get("sky").unwrap().state, State::Picked);
    }
}
