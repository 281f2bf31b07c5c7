//! The merged movie or series catalogue, compact (pure: values in, values out).
//!
//! Each service's list is kept as it loaded (`ServiceList`: one small `Item` per
//! title, categories and extensions interned per list), so a service that fails keeps
//! its last good list without copying anyone else's. The merged titles are only
//! references into those lists (`Title`: an id and the sources in priority order);
//! a title's name, year, poster and category are its first source's. Nothing here
//! is cloned per request: answers borrow from the catalogue (`TitleRef`).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Listed, ListedEpisode, VodKind};
use crate::model::Headers;

/// Strings stored once and referred to by index (categories, extensions).
#[derive(Debug, Default)]
pub struct Names {
    list: Vec<Box<str>>,
    index: HashMap<Box<str>, u32>,
}

impl Names {
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(s.into());
        self.index.insert(s.into(), i);
        i
    }

    pub fn get(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("", |s| s)
    }
}

/// One title of one service's list.
#[derive(Debug)]
pub struct Item {
    /// The service's own id.
    pub id: Box<str>,
    pub name: Box<str>,
    /// `name` normalised (lowercase ASCII words): merging and search compare these.
    pub key: Box<str>,
    pub poster: Box<str>,
    pub url: Option<Box<str>>,
    pub headers: Option<Box<Headers>>,
    /// A series' episodes when the list carries them.
    pub episodes: Option<Box<[Episode]>>,
    /// 0: none.
    pub tmdb: u32,
    /// Unix seconds; 0: not said.
    pub added: u32,
    /// Out of 10; negative: not said.
    pub rating: f32,
    /// 0: not said.
    pub year: u16,
    /// In the list's `names`.
    pub category: u32,
    /// In the list's `names`.
    pub ext: u32,
    /// Marked for adults (fits in the padding: no cost per item).
    pub adult: bool,
}

/// The short facts of an item that has some (`ServiceList::facts`): series lists
/// carry them, movie lists do not, so items without any cost nothing.
#[derive(Debug)]
pub struct Facts {
    /// In the list's `names` (few genres, many titles).
    pub genre: u32,
    /// Minutes an episode runs; 0: not said.
    pub run_time: u16,
    pub cast: Box<str>,
    pub director: Box<str>,
    pub release_date: Box<str>,
}

/// `Facts` as answers read them.
#[derive(Debug, Default, Clone, Copy)]
pub struct FactsRef<'a> {
    pub genre: &'a str,
    pub cast: &'a str,
    pub director: &'a str,
    pub release_date: &'a str,
    pub run_time: Option<u16>,
}

/// One episode a list carries.
#[derive(Debug)]
pub struct Episode {
    pub season: u16,
    pub episode: u16,
    pub title: Box<str>,
    pub id: Box<str>,
    pub ext: Box<str>,
    pub url: Option<Box<str>>,
    pub headers: Option<Box<Headers>>,
}

impl Episode {
    pub fn listed(&self) -> ListedEpisode {
        ListedEpisode {
            season: self.season,
            episode: self.episode,
            title: self.title.to_string(),
            id: self.id.to_string(),
            ext: self.ext.to_string(),
            url: self.url.as_deref().map(str::to_string),
            headers: self.headers.as_deref().cloned().unwrap_or_default(),
            info: None,
        }
    }
}

/// One service's movies or series as they last loaded.
#[derive(Debug)]
pub struct ServiceList {
    pub service: Box<str>,
    pub items: Vec<Item>,
    pub names: Names,
    /// The facts of the items that have some, by item index (ascending).
    pub facts: Vec<(u32, Facts)>,
}

impl ServiceList {
    /// The compact form of `listed`; entries without an id or a name are skipped
    /// (counted in the second value), an id listed twice is kept once.
    pub fn new(service: &str, listed: Vec<Listed>) -> (Self, usize) {
        let mut names = Names::default();
        names.intern("");
        let mut seen = std::collections::HashSet::with_capacity(listed.len());
        let mut items = Vec::with_capacity(listed.len());
        let mut facts = Vec::new();
        let mut skipped = 0;
        for l in listed {
            // A title and a category on one line, without terminal controls: players
            // show them as they come, JSON or not.
            let name = clean(&l.name);
            let category = clean(&l.category);
            let name = &*name;
            if l.id.is_empty() || name.is_empty() {
                skipped += 1;
                continue;
            }
            if !seen.insert(l.id.clone()) {
                continue;
            }
            let episodes = (!l.episodes.is_empty()).then(|| {
                let mut eps: Vec<Episode> = l
                    .episodes
                    .into_iter()
                    .map(|e| Episode {
                        season: e.season,
                        episode: e.episode,
                        title: e.title.into(),
                        id: e.id.into(),
                        ext: container(&e.ext).into(),
                        url: e.url.map(Into::into),
                        headers: (!e.headers.is_empty()).then(|| Box::new(e.headers)),
                    })
                    .collect();
                eps.sort_by_key(|e| (e.season, e.episode));
                eps.dedup_by_key(|e| (e.season, e.episode));
                eps.into_boxed_slice()
            });
            if !l.facts.is_empty() {
                let f = l.facts;
                facts.push((
                    u32::try_from(items.len()).unwrap_or(u32::MAX),
                    Facts {
                        genre: names.intern(f.genre.trim()),
                        run_time: f.run_time.unwrap_or(0),
                        cast: f.cast.into(),
                        director: f.director.into(),
                        release_date: f.release_date.into(),
                    },
                ));
            }
            items.push(Item {
                key: crate::lineup::normalise_without_notes(name).into(),
                name: name.into(),
                id: l.id.into(),
                poster: l.poster.into(),
                url: l.url.map(Into::into),
                headers: (!l.headers.is_empty()).then(|| Box::new(l.headers)),
                episodes,
                tmdb: l.tmdb.unwrap_or(0),
                added: l
                    .added
                    .and_then(|a| u32::try_from(a).ok())
                    .unwrap_or_default(),
                rating: l.rating.unwrap_or(-1.0),
                year: l.year.unwrap_or(0),
                category: names.intern(&category),
                ext: names.intern(&container(&l.ext)),
                adult: l.adult,
            });
        }
        items.shrink_to_fit();
        facts.shrink_to_fit();
        (
            Self {
                service: service.into(),
                items,
                names,
                facts,
            },
            skipped,
        )
    }

    /// The facts of item `item` (its index); `None`: it has none.
    pub fn facts_of(&self, item: u32) -> Option<FactsRef<'_>> {
        let i = self.facts.binary_search_by_key(&item, |(i, _)| *i).ok()?;
        let f = &self.facts[i].1;
        Some(FactsRef {
            genre: self.names.get(f.genre),
            cast: &f.cast,
            director: &f.director,
            release_date: &f.release_date,
            run_time: (f.run_time > 0).then_some(f.run_time),
        })
    }

    /// The item with the service's id `id`.
    pub fn find(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| &*i.id == id)
    }
}

/// Where a merged title's source is: list `list`'s item `item`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ref {
    pub list: u16,
    pub item: u32,
}

/// A merged title: its stable id and its sources in priority order.
#[derive(Debug)]
pub struct Title {
    pub id: u32,
    pub sources: Box<[Ref]>,
}

/// The merged catalogue of one kind.
#[derive(Debug)]
pub struct Catalogue {
    pub kind: VodKind,
    /// Each service's list, in priority order.
    pub lists: Vec<Arc<ServiceList>>,
    /// Sorted by normalised name, then year.
    titles: Vec<Title>,
    by_id: HashMap<u32, u32>,
    /// Category names with how many titles each holds, by name.
    categories: Vec<(Box<str>, usize)>,
}

/// A title with the catalogue it belongs to: everything an answer needs, borrowed.
#[derive(Clone, Copy)]
pub struct TitleRef<'a> {
    pub title: &'a Title,
    cat: &'a Catalogue,
}

impl<'a> TitleRef<'a> {
    pub fn id(&self) -> u32 {
        self.title.id
    }

    pub fn kind(&self) -> VodKind {
        self.cat.kind
    }

    /// The first source's item (the title's facts).
    pub fn first(&self) -> &'a Item {
        self.item(self.title.sources[0])
    }

    fn item(&self, r: Ref) -> &'a Item {
        &self.cat.lists[r.list as usize].items[r.item as usize]
    }

    pub fn name(&self) -> &'a str {
        &self.first().name
    }

    pub fn year(&self) -> Option<u16> {
        let first = self.first();
        (first.year > 0)
            .then_some(first.year)
            .or_else(|| self.sources().map(|(_, i)| i.year).find(|&y| y > 0))
    }

    pub fn tmdb(&self) -> Option<u32> {
        self.sources().map(|(_, i)| i.tmdb).find(|&t| t > 0)
    }

    pub fn rating(&self) -> Option<f32> {
        self.sources().map(|(_, i)| i.rating).find(|&r| r >= 0.0)
    }

    pub fn poster(&self) -> &'a str {
        self.sources()
            .map(|(_, i)| &*i.poster)
            .find(|p| !p.is_empty())
            .unwrap_or("")
    }

    /// The poster with the service that lists it (its image is fetched through that
    /// service); `("", "")`: none.
    pub fn poster_source(&self) -> (&'a str, &'a str) {
        self.sources()
            .find(|(_, i)| !i.poster.is_empty())
            .map_or(("", ""), |(l, i)| (&*l.service, &*i.poster))
    }

    /// When the first source that says added it (Unix seconds); 0: none says.
    pub fn added(&self) -> u32 {
        self.sources()
            .map(|(_, i)| i.added)
            .find(|&a| a > 0)
            .unwrap_or(0)
    }

    /// The name without a year at its end, as panels send `title`.
    pub fn title(&self) -> &'a str {
        super::xtream::without_year(self.name())
    }

    /// Whether any source marks it for adults.
    pub fn adult(&self) -> bool {
        self.sources().any(|(_, i)| i.adult)
    }

    /// The first source's facts that has any; empty: none.
    pub fn facts(&self) -> FactsRef<'a> {
        self.title
            .sources
            .iter()
            .find_map(|r| self.cat.lists[r.list as usize].facts_of(r.item))
            .unwrap_or_default()
    }

    /// The first source's category; empty: none.
    pub fn category(&self) -> &'a str {
        let r = self.title.sources[0];
        let list = &self.cat.lists[r.list as usize];
        list.names.get(list.items[r.item as usize].category)
    }

    /// The first source's container extension, `mp4` when it does not say.
    pub fn ext(&self) -> &'a str {
        let r = self.title.sources[0];
        let list = &self.cat.lists[r.list as usize];
        match list.names.get(list.items[r.item as usize].ext) {
            "" => "mp4",
            e => e,
        }
    }

    /// Each source: its list (service) and item, in priority order.
    pub fn sources(&self) -> impl Iterator<Item = (&'a ServiceList, &'a Item)> + 'a {
        let cat = self.cat;
        self.title.sources.iter().map(move |r| {
            let list = &cat.lists[r.list as usize];
            (&**list, &list.items[r.item as usize])
        })
    }

    /// The services of the sources, in priority order.
    pub fn services(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.sources().map(|(l, _)| &*l.service)
    }
}

/// What to list: a search, a category, and which titles the caller may see.
#[derive(Default)]
pub struct Filter<'q> {
    /// Normalised search words (`lineup::normalise_without_notes`), each in the name or the year;
    /// empty: all.
    pub query: String,
    /// Case-insensitive category name; `None`: all.
    pub category: Option<&'q str>,
}

/// Whether every word of `query` (normalised) is in the item's name, or is its year.
fn matches(item: &Item, query: &str) -> bool {
    query
        .split(' ')
        .all(|w| item.key.contains(w) || (item.year > 0 && w.parse::<u16>() == Ok(item.year)))
}

impl Catalogue {
    /// An empty catalogue.
    pub fn empty(kind: VodKind) -> Self {
        Self {
            kind,
            lists: Vec::new(),
            titles: Vec::new(),
            by_id: HashMap::new(),
            categories: Vec::new(),
        }
    }

    /// Merges `lists` (in priority order): items with equal TMDB ids are one title;
    /// else items with equal normalised name and year (unless their TMDB ids differ);
    /// an item without a year joins the one title of its name when there is only one
    /// (and a title without a year the item of its name that has one, likewise).
    /// Returns the catalogue with ids still 0 and each title's identity key, in title
    /// order, for `with_ids`.
    pub fn merge(kind: VodKind, lists: Vec<Arc<ServiceList>>) -> (Self, Vec<String>) {
        let mut titles: Vec<(Vec<Ref>, u32)> = Vec::new();
        let mut by_tmdb: HashMap<u32, usize> = HashMap::new();
        let mut by_name: HashMap<(&str, u16), usize> = HashMap::new();
        // The one title of each name, whatever its year (`None` once there are two).
        let mut by_key: HashMap<&str, Option<usize>> = HashMap::new();
        for (li, list) in lists.iter().enumerate() {
            let li = u16::try_from(li).unwrap_or(u16::MAX);
            for (ii, item) in list.items.iter().enumerate() {
                let r = Ref {
                    list: li,
                    item: u32::try_from(ii).unwrap_or(u32::MAX),
                };
                let by_t = (item.tmdb > 0)
                    .then(|| by_tmdb.get(&item.tmdb).copied())
                    .flatten();
                let tmdb_agrees = |t: usize| {
                    let other = titles[t].1;
                    other == 0 || item.tmdb == 0 || other == item.tmdb
                };
                let by_n = by_name
                    .get(&(&*item.key, item.year))
                    .copied()
                    .or_else(|| {
                        // A year on one side only ("Great Show" and "Great Show (2019)"):
                        // the same title when its name is no other's.
                        let t = (*by_key.get(&*item.key)?)?;
                        let yearless = titles[t]
                            .0
                            .iter()
                            .all(|r| lists[r.list as usize].items[r.item as usize].year == 0);
                        (item.year == 0 || yearless).then_some(t)
                    })
                    .filter(|&t| tmdb_agrees(t));
                let merged = by_t.or(by_n).filter(|&t| {
                    // One title takes one entry per service: a list's own duplicates stay apart.
                    !titles[t].0.iter().any(|s| s.list == li)
                });
                let t = match merged {
                    Some(t) => {
                        titles[t].0.push(r);
                        if titles[t].1 == 0 {
                            titles[t].1 = item.tmdb;
                        }
                        t
                    }
                    None => {
                        titles.push((vec![r], item.tmdb));
                        titles.len() - 1
                    }
                };
                if item.tmdb > 0 {
                    by_tmdb.entry(item.tmdb).or_insert(t);
                }
                if !item.key.is_empty() {
                    by_name.entry((&item.key, item.year)).or_insert(t);
                    by_key
                        .entry(&item.key)
                        .and_modify(|one| {
                            if *one != Some(t) {
                                *one = None;
                            }
                        })
                        .or_insert(Some(t));
                }
            }
        }
        drop((by_tmdb, by_name, by_key));
        let item = |r: &Ref| &lists[r.list as usize].items[r.item as usize];
        titles.sort_by(|a, b| {
            let (x, y) = (item(&a.0[0]), item(&b.0[0]));
            (&x.key, x.year, &x.name).cmp(&(&y.key, y.year, &y.name))
        });
        // Titles a list holds twice under one name and year keep apart: the second
        // and later ones are `#2`, `#3`... (in name order, so stable while the list is).
        let mut seen: HashMap<String, u32> = HashMap::new();
        let keys = titles
            .iter()
            .map(|(refs, tmdb)| {
                let first = item(&refs[0]);
                let key = match tmdb {
                    0 => format!("n:{}|{}", first.key, first.year),
                    t => format!("t:{t}"),
                };
                let n = seen.entry(key.clone()).or_insert(0);
                *n += 1;
                // A TMDB title merged with entries that give none is known by their
                // name key too: the key it has while the services that gave the TMDB
                // id are off (or before they came), so its id stays (`Store::ids`).
                let by_name = refs
                    .iter()
                    .map(item)
                    .find(|i| i.tmdb == 0 && !i.key.is_empty())
                    .filter(|_| *tmdb != 0);
                match (*n, by_name) {
                    (1, Some(i)) => format!(
                        "{key}{}n:{}|{}",
                        crate::store::ALIAS_SEPARATOR,
                        i.key,
                        i.year
                    ),
                    (1, None) => key,
                    (n, _) => format!("{key}#{n}"),
                }
            })
            .collect();
        let mut counts: HashMap<(usize, u32), usize> = HashMap::new();
        for (refs, _) in &titles {
            let r = refs[0];
            *counts
                .entry((r.list as usize, item(&r).category))
                .or_default() += 1;
        }
        let mut by_name: HashMap<String, (Box<str>, usize)> = HashMap::new();
        for ((list, cat), n) in counts {
            let name = lists[list].names.get(cat);
            by_name
                .entry(name.to_lowercase())
                .or_insert_with(|| (name.into(), 0))
                .1 += n;
        }
        let mut categories: Vec<(Box<str>, usize)> = by_name.into_values().collect();
        categories.sort();
        let titles = titles
            .into_iter()
            .map(|(refs, _)| Title {
                id: 0,
                sources: refs.into_boxed_slice(),
            })
            .collect();
        (
            Self {
                kind,
                lists,
                titles,
                by_id: HashMap::new(),
                categories,
            },
            keys,
        )
    }

    /// Gives each title its stable id (`ids` in title order, as `merge` gave the keys).
    pub fn with_ids(mut self, ids: &[u64]) -> Self {
        self.by_id = HashMap::with_capacity(self.titles.len());
        for (i, (t, id)) in self.titles.iter_mut().zip(ids).enumerate() {
            t.id = u32::try_from(*id).unwrap_or(u32::MAX);
            self.by_id.insert(t.id, i as u32);
        }
        self
    }

    pub fn len(&self) -> usize {
        self.titles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.titles.is_empty()
    }

    fn at(&self, i: usize) -> TitleRef<'_> {
        TitleRef {
            title: &self.titles[i],
            cat: self,
        }
    }

    /// The `i`th title by name.
    pub fn nth(&self, i: usize) -> Option<TitleRef<'_>> {
        (i < self.titles.len()).then(|| self.at(i))
    }

    /// The title with stable id `id`.
    pub fn get(&self, id: u32) -> Option<TitleRef<'_>> {
        self.by_id.get(&id).map(|&i| self.at(i as usize))
    }

    /// Every title, by name.
    pub fn iter(&self) -> impl Iterator<Item = TitleRef<'_>> + '_ {
        (0..self.titles.len()).map(|i| self.at(i))
    }

    /// The titles `filter` selects, by name.
    pub fn select<'s>(&'s self, filter: &'s Filter<'s>) -> impl Iterator<Item = TitleRef<'s>> + 's {
        self.iter().filter(move |t| {
            filter
                .category
                .is_none_or(|c| t.category().eq_ignore_ascii_case(c))
                && (filter.query.is_empty() || t.sources().any(|(_, i)| matches(i, &filter.query)))
        })
    }

    /// Category names and their title counts, by name.
    pub fn categories(&self) -> &[(Box<str>, usize)] {
        &self.categories
    }
}

/// `t` trimmed, on one line and without terminal controls (each a space): a title or
/// category players show as it comes, in JSON too.
fn clean(t: &str) -> std::borrow::Cow<'_, str> {
    if t.chars().any(|c| crate::m3u::printable(c) != c) {
        let t: String = t.chars().map(crate::m3u::printable).collect();
        t.trim().to_string().into()
    } else {
        t.trim().into()
    }
}

/// A container extension as listed (`mkv`, `MP4`), lowercased, when it is one: up to
/// five letters or digits. Anything else (a panel's `container_extension` holding a
/// line break and a playlist entry) is none, so `mp4` stands in: it goes into stream
/// URLs and `/vod.m3u` lines.
pub(crate) fn container(ext: &str) -> String {
    let ext = ext.trim().trim_start_matches('.');
    if !ext.is_empty() && ext.len() <= 5 && ext.chars().all(|c| c.is_ascii_alphanumeric()) {
        ext.to_ascii_lowercase()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_extension_is_a_short_word_or_none() {
        assert_eq!(container(" MKV "), "mkv");
        assert_eq!(container(".mp4"), "mp4");
        assert_eq!(container("mp4\n#EXTINF:-1,x\nhttp://evil/"), "");
        assert_eq!(container("m3u8x2"), "");
        assert_eq!(container(""), "");
    }

    #[test]
    fn titles_and_categories_are_one_line_without_controls() {
        let (l, _) = ServiceList::new(
            "S",
            vec![Listed {
                category: "Evil\nCat\u{1}".into(),
                ..listed("1", " Movie\nBad\u{0}Types ", None, None)
            }],
        );
        assert_eq!(&*l.items[0].name, "Movie Bad Types");
        assert_eq!(l.names.get(l.items[0].category), "Evil Cat");
    }

    fn listed(id: &str, name: &str, year: Option<u16>, tmdb: Option<u32>) -> Listed {
        Listed {
            id: id.into(),
            name: name.into(),
            year,
            tmdb,
            category: "Drama".into(),
            ..Listed::default()
        }
    }

    fn list(service: &str, items: Vec<Listed>) -> Arc<ServiceList> {
        Arc::new(ServiceList::new(service, items).0)
    }

    #[test]
    fn merges_by_tmdb_else_name_and_year() {
        let a = list(
            "A",
            vec![
                listed("1", "Amélie", Some(2001), None),
                listed("2", "Heat", Some(1995), Some(949)),
                listed("3", "Solaris", Some(1972), None),
                listed("4", "Twin", Some(2000), Some(10)),
            ],
        );
        let b = list(
            "B",
            vec![
                listed("x", "AMELIE", Some(2001), None),
                listed("y", "Heat (1995)", None, Some(949)),
                listed("z", "Solaris", Some(2002), None),
                listed("w", "Twin", Some(2000), Some(11)),
            ],
        );
        let (cat, keys) = Catalogue::merge(VodKind::Movie, vec![a, b]);
        let ids: Vec<u64> = (1..=keys.len() as u64).collect();
        let cat = cat.with_ids(&ids);
        let titles: Vec<(String, Vec<String>)> = cat
            .iter()
            .map(|t| {
                (
                    format!("{} {:?}", t.name(), t.year()),
                    t.sources()
                        .map(|(l, i)| format!("{}:{}", l.service, i.id))
                        .collect(),
                )
            })
            .collect();
        let names: Vec<&str> = titles.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Amélie Some(2001)",
                "Heat Some(1995)",
                "Solaris Some(1972)",
                "Solaris Some(2002)",
                "Twin Some(2000)",
                "Twin Some(2000)"
            ]
        );
        assert_eq!(titles[0].1, ["A:1", "B:x"]);
        assert_eq!(titles[1].1, ["A:2", "B:y"]);
        assert_eq!(titles[2].1, ["A:3"]);
        assert!(keys.contains(&"t:949".to_string()));
        // Two titles of one list with one name and year keep two keys.
        assert!(keys.contains(&"n:solaris|1972".to_string()));
        let (_, keys) = Catalogue::merge(
            VodKind::Movie,
            vec![list(
                "A",
                vec![
                    listed("1", "Dup", None, None),
                    listed("2", "Dup", None, None),
                ],
            )],
        );
        assert_eq!(keys, ["n:dup|0", "n:dup|0#2"]);
        // A year on one side only joins the one title of that name; with two of that
        // name (a remake), it stays apart.
        let (shows, _) = Catalogue::merge(
            VodKind::Series,
            vec![
                list(
                    "Panel",
                    vec![
                        listed("1", "Great Show", Some(2019), None),
                        listed("2", "Dune", Some(1984), None),
                        listed("3", "Dune", Some(2021), None),
                    ],
                ),
                list(
                    "List",
                    vec![
                        listed("a", "GREAT SHOW", None, None),
                        listed("b", "Dune", None, None),
                    ],
                ),
            ],
        );
        let sources = |name: &str| -> Vec<Vec<String>> {
            shows
                .iter()
                .filter(|t| t.name().to_lowercase().starts_with(&name.to_lowercase()))
                .map(|t| {
                    t.sources()
                        .map(|(l, i)| format!("{}:{}", l.service, i.id))
                        .collect()
                })
                .collect()
        };
        assert_eq!(sources("Great Show"), [["Panel:1", "List:a"]]);
        assert_eq!(sources("Dune").len(), 3, "{:?}", sources("Dune"));
        // A TMDB title merged with an entry that gives none is known by its name key too.
        let (_, keys) = Catalogue::merge(
            VodKind::Movie,
            vec![
                list("A", vec![listed("1", "Heat", Some(1995), Some(949))]),
                list("B", vec![listed("x", "HEAT", Some(1995), None)]),
            ],
        );
        assert_eq!(
            keys,
            [format!("t:949{}n:heat|1995", crate::store::ALIAS_SEPARATOR)]
        );
        let filter = Filter {
            query: crate::lineup::normalise_without_notes("amél"),
            category: Some("drama"),
        };
        assert_eq!(cat.select(&filter).count(), 1);
        assert_eq!(&*cat.categories()[0].0, "Drama");
        assert_eq!(cat.categories()[0].1, 6);
    }

    #[test]
    fn facts_are_kept_only_for_the_items_that_have_some() {
        let with = |id: &str, cast: &str| Listed {
            facts: crate::vod::Facts {
                cast: cast.into(),
                genre: "Crime".into(),
                ..Default::default()
            },
            ..listed(id, id, None, None)
        };
        let (l, _) = ServiceList::new(
            "A",
            vec![
                listed("", "skipped", None, None),
                listed("1", "plain", None, None),
                with("2", "A, B"),
                listed("3", "plain", None, None),
                with("4", "C"),
            ],
        );
        assert_eq!(l.facts.len(), 2);
        assert!(l.facts_of(0).is_none());
        assert_eq!(l.facts_of(1).unwrap().cast, "A, B");
        assert_eq!(l.facts_of(1).unwrap().genre, "Crime");
        assert!(l.facts_of(2).is_none());
        assert_eq!(l.facts_of(3).unwrap().cast, "C");
        // 200,000 movies: an item has no room for more (`adult` took padding), and
        // an item with facts costs one entry beside it (plus its text).
        assert_eq!(std::mem::size_of::<Item>(), 128);
        assert_eq!(std::mem::size_of::<(u32, Facts)>(), 64);
    }

    #[test]
    fn entries_without_id_or_name_are_skipped_and_counted() {
        let (l, skipped) = ServiceList::new(
            "A",
            vec![
                listed("", "No id", None, None),
                listed("1", "  ", None, None),
                listed("2", "Ok", None, None),
                listed("2", "Ok twice", None, None),
            ],
        );
        assert_eq!(skipped, 2);
        assert_eq!(l.items.len(), 1);
    }
}
