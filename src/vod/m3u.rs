//! M3U entries that are files rather than live streams: an Xtream-style
//! `/movie/` or `/series/` path, or a media file's extension. A group title alone
//! does not make an entry a movie (live groups are often called "Movies"). These
//! entries leave the live lineup and become the service's movies and series;
//! episodes are grouped into series by the `S01E02` (or `1x02`) in their names.
//! The service reads its list once for both (`Files` collects these entries); the
//! rest is pure.

use std::collections::HashMap;

use super::{Listed, ListedEpisode, VodKind};
use crate::model::Headers;

/// File extensions of media files (a live stream is `.ts`, `.m3u8` or none). Not
/// `.flv`: HTTP-FLV is a live stream's format as often as a file's.
const MEDIA_EXTENSIONS: &[&str] = &[
    "mp4", "mkv", "avi", "mov", "m4v", "wmv", "webm", "mpg", "mpeg", "divx", "ogv",
];

/// The extension of an HLS playlist: such an entry is live unless more than its path
/// says it is a title (`playlist_is_a_title`).
const PLAYLIST_EXTENSION: &str = "m3u8";

/// Whether a playlist entry under a `/movie/` or `/series/` path (`after`: the path
/// from that folder on) is a title: a panel's `/movie/{user}/{pass}/{id}.m3u8`, a
/// name with a year (`Film (2010)`) or an episode's marker. A live channel of films
/// (`/movie/live/playlist.m3u8`, "Planet Movie (720p)") is none of these.
fn playlist_is_a_title(after: &str, name: &str) -> bool {
    let parts: Vec<&str> = after.split('/').filter(|p| !p.is_empty()).collect();
    let panel = parts.len() == 4
        && parts[3]
            .split('.')
            .next()
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    static YEAR: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let year =
        YEAR.get_or_init(|| regex::Regex::new(r"[(\[](?:19|20)\d{2}[)\]]").expect("static regex"));
    panel || year.is_match(name) || episode_marker(name).is_some()
}

/// Whether the entry at `url` named `name` is a file, and which kind; `None`: live.
pub fn file_kind(url: &str, name: &str) -> Option<VodKind> {
    // Kodi appends headers after `|`; the query and fragment are not the path.
    let url = url.split(['|', '?', '#']).next().unwrap_or(url);
    let path = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("", |p| &url[i + 3 + p..]),
        None => url,
    };
    let lower = path.to_ascii_lowercase();
    let ext = lower
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e);
    let playlist = ext == Some(PLAYLIST_EXTENSION);
    let titled = |folder: &str| {
        lower
            .find(folder)
            .is_some_and(|at| !playlist || playlist_is_a_title(&lower[at..], name))
    };
    if titled("/series/") {
        return Some(VodKind::Series);
    }
    if titled("/movie/") || titled("/movies/") {
        return Some(VodKind::Movie);
    }
    if MEDIA_EXTENSIONS.contains(&ext?) {
        return Some(match episode_marker(name) {
            Some(_) => VodKind::Series,
            None => VodKind::Movie,
        });
    }
    None
}

/// The extension of the file at `url` (`mp4`), empty when it has none.
pub fn extension(url: &str) -> String {
    let path = url.split(['|', '?', '#']).next().unwrap_or(url);
    path.rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| e.len() <= 5 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_default()
}

/// `(series name, season, episode)` from `Show S01E02`, `Show S01 E02`, `Show 1x02`.
pub fn episode_marker(name: &str) -> Option<(String, u16, u16)> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"(?i)^(.*?)[\s._\-]*\b(?:s(\d{1,3})\s*[._\-]?\s*e(\d{1,4})|(\d{1,2})x(\d{1,4}))\b",
        )
        .expect("static regex")
    });
    let c = re.captures(name)?;
    let show = c
        .get(1)?
        .as_str()
        .trim()
        .trim_end_matches(['-', ':', '|'])
        .trim();
    let num = |i: usize, j: usize| {
        c.get(i)
            .or_else(|| c.get(j))
            .and_then(|m| m.as_str().parse::<u16>().ok())
    };
    let (season, episode) = (num(2, 4)?, num(3, 5)?);
    (!show.is_empty()).then(|| (show.to_string(), season, episode))
}

/// The file entries of one read of a list, collected as the list is read for its
/// live channels (one download serves both).
#[derive(Default)]
pub struct Files {
    entries: Vec<FileEntry>,
    /// File entries without a usable URL.
    skipped: usize,
}

impl Files {
    pub fn push(&mut self, entry: FileEntry) {
        self.entries.push(entry);
    }

    /// Counts a file entry without a usable URL.
    /// The file entries read.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn skip(&mut self) {
        self.skipped += 1;
    }

    /// The movies and series; `None` when the list had no file entries (a live-only
    /// list has no catalogue).
    pub fn lists(self) -> Option<super::VodLists> {
        if self.entries.is_empty() && self.skipped == 0 {
            return None;
        }
        let (movies, series, unnumbered) = catalogue(self.entries);
        Some(super::VodLists {
            movies: Some(Ok(movies)),
            series: Some(Ok(series)),
            skipped: self.skipped + unnumbered,
        })
    }
}

/// One file entry of a list.
pub struct FileEntry {
    pub kind: VodKind,
    pub name: String,
    pub group: String,
    pub logo: String,
    pub url: String,
    pub headers: Headers,
}

/// The movies and series of a list's file entries; entries that are episodes
/// without a recognisable `S01E02` are skipped (counted in the third value).
pub fn catalogue(entries: Vec<FileEntry>) -> (Vec<Listed>, Vec<Listed>, usize) {
    let mut movies = Vec::new();
    let mut series: Vec<Listed> = Vec::new();
    let mut by_show: HashMap<String, usize> = HashMap::new();
    let mut skipped = 0;
    for e in entries {
        let ext = extension(&e.url);
        match e.kind {
            VodKind::Movie => movies.push(Listed {
                id: e.url.clone(),
                year: super::xtream::year_in_name(&e.name),
                name: e.name,
                category: e.group,
                poster: e.logo,
                ext,
                url: Some(e.url),
                headers: e.headers,
                ..Listed::default()
            }),
            VodKind::Series => {
                let Some((show, season, episode)) = episode_marker(&e.name) else {
                    skipped += 1;
                    continue;
                };
                let key = crate::lineup::normalise_without_notes(&show);
                let i = *by_show.entry(key.clone()).or_insert_with(|| {
                    series.push(Listed {
                        id: key,
                        year: super::xtream::year_in_name(&show),
                        name: show,
                        category: e.group.clone(),
                        poster: e.logo.clone(),
                        ..Listed::default()
                    });
                    series.len() - 1
                });
                series[i].episodes.push(ListedEpisode {
                    season,
                    episode,
                    title: e.name,
                    id: e.url.clone(),
                    ext,
                    url: Some(e.url),
                    headers: e.headers,
                    info: None,
                });
            }
        }
    }
    (movies, series, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_told_from_live_streams_by_path_or_extension() {
        let cases = [
            (
                "http://p.example/movie/u/p/12.mkv",
                "Heat",
                Some(VodKind::Movie),
            ),
            (
                "http://p.example/series/u/p/99.mp4",
                "Show S01E02",
                Some(VodKind::Series),
            ),
            (
                "http://cdn.example/films/heat.MP4?token=1",
                "Heat",
                Some(VodKind::Movie),
            ),
            (
                "http://cdn.example/tv/show.s01e02.mkv",
                "Show S01E02",
                Some(VodKind::Series),
            ),
            ("http://p.example/live/u/p/12.ts", "Movies 24/7", None),
            ("http://cdn.example/hls/index.m3u8", "Cinema", None),
            ("http://cdn.example/mp4", "Odd", None),
            // A playlist under such a path is a title when more says so.
            (
                "http://p.example/movie/u/p/77.m3u8",
                "Heat",
                Some(VodKind::Movie),
            ),
            (
                "http://cdn.example/movies/film/master.m3u8",
                "Film (2010)",
                Some(VodKind::Movie),
            ),
            (
                "http://cdn.example/series/show/e2.m3u8",
                "Show S01E02",
                Some(VodKind::Series),
            ),
            // Live channels whose path says "movie": nothing else says title.
            (
                "https://edge.example/movie/live/playlist.m3u8",
                "Planet Movie (720p)",
                None,
            ),
            (
                "http://api.example:3000/movies/playlist.m3u8",
                "Movies",
                None,
            ),
            // HTTP-FLV is live as often as not.
            ("http://live.example/channellive/ch2.flv", "CH2", None),
        ];
        for (url, name, want) in cases {
            assert_eq!(file_kind(url, name), want, "{url}");
        }
        assert_eq!(extension("http://x/a/b.MKV|Referer=x"), "mkv");
        assert_eq!(
            episode_marker("The Show - S02 E10 - Title"),
            Some(("The Show".into(), 2, 10))
        );
        assert_eq!(episode_marker("Show 1x03"), Some(("Show".into(), 1, 3)));
        assert_eq!(episode_marker("Heat"), None);
    }
}
