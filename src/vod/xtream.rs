//! Readers of an Xtream panel's movie and series answers (pure): `get_vod_streams`,
//! `get_series` (read element by element, so a list of 200,000 titles is never one
//! JSON tree), `get_vod_info` and `get_series_info`. Panels mix strings and numbers
//! for the same field; every reader takes either.

use std::collections::HashMap;

use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;

use super::{Details, EpisodeInfo, Facts, Listed, ListedEpisode};
use crate::services::xtream::{as_text, as_u64};

/// Reads `body`, which must be a non-empty JSON array, calling `each` with every
/// element; the count, or why the body is not such a list (HTML, `{}`, `[]`...).
pub fn read_list(body: &[u8], action: &str, each: impl FnMut(Value)) -> Result<usize, String> {
    let start = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied()
        .unwrap_or(b' ');
    match start {
        b'[' => {}
        b'{' => {
            return Err(format!(
                "{action} answered an object where a list was expected"
            ))
        }
        b'<' => return Err(format!("{action} answered an HTML page, not a list")),
        b' ' => return Err(format!("{action} answered nothing")),
        _ => return Err(format!("{action} did not answer JSON")),
    }
    struct Each<F>(F);
    impl<'de, F: FnMut(Value)> Visitor<'de> for Each<F> {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while let Some(v) = seq.next_element::<Value>()? {
                (self.0)(v);
                n += 1;
            }
            Ok(n)
        }
    }
    // A byte that is not UTF-8 (a panel's Latin-1 title) is U+FFFD, as in live lists,
    // not the end of the whole list; a list that is UTF-8 is read in place.
    let text = String::from_utf8_lossy(body);
    let mut de = serde_json::Deserializer::from_str(&text);
    let n = de
        .deserialize_seq(Each(each))
        .map_err(|e| format!("{action} answered broken JSON ({e})"))?;
    Ok(n)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(as_text).unwrap_or_default()
}

fn first_text(v: &Value, keys: &[&str]) -> String {
    keys.iter()
        .map(|k| text(v, k))
        .find(|t| !t.is_empty())
        .unwrap_or_default()
}

/// A TMDB id: `tmdb` or `tmdb_id`, a number or a numeric string; 0 is none.
fn tmdb(v: &Value) -> Option<u32> {
    ["tmdb", "tmdb_id"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(as_u64))
        .find(|&t| t > 0)
        .and_then(|t| u32::try_from(t).ok())
}

/// A year: `year`, else the start of a release date, else `(1999)` at the end of the name.
fn year(v: &Value, name: &str) -> Option<u16> {
    let from = |s: &str| {
        let digits: String = s.chars().take(4).collect();
        digits
            .parse::<u16>()
            .ok()
            .filter(|y| (1870..=2200).contains(y))
    };
    first_text(v, &["year", "releaseDate", "release_date", "releasedate"])
        .split_whitespace()
        .next()
        .and_then(from)
        .or_else(|| year_in_name(name))
}

/// `(1999)` or `- 1999` at the end of a title, as panels often write it.
pub fn year_in_name(name: &str) -> Option<u16> {
    let t = name.trim_end().trim_end_matches(')');
    let split = t.len().checked_sub(4)?;
    let (before, tail) = (t.get(..split)?, t.get(split..)?);
    let y = tail
        .parse::<u16>()
        .ok()
        .filter(|y| (1870..=2200).contains(y))?;
    let before = before.trim_end();
    (before.ends_with('(') || before.ends_with('-')).then_some(y)
}

/// `name` without the year [`year_in_name`] finds at its end: what panels send as a
/// title's `title` ("Heat (1995)" → "Heat").
pub fn without_year(name: &str) -> &str {
    if year_in_name(name).is_none() {
        return name;
    }
    let t = name.trim_end();
    let cut = t.trim_end_matches(')');
    let cut = cut[..cut.len() - 4].trim_end();
    let cut = cut
        .strip_suffix('(')
        .or_else(|| cut.strip_suffix('-'))
        .unwrap_or(cut)
        .trim_end();
    if cut.is_empty() {
        name
    } else {
        cut
    }
}

fn rating(v: &Value) -> Option<f32> {
    let r = |k: &str| {
        v.get(k)
            .and_then(as_text)
            .and_then(|t| t.parse::<f32>().ok())
    };
    // Panels send `"rating": ""` and `"rating_5based": 0` for a title not rated.
    r("rating")
        .or_else(|| r("rating_5based").filter(|x| *x > 0.0).map(|x| x * 2.0))
        .filter(|x| x.is_finite() && *x >= 0.0)
}

/// The category of an entry (`category_id`, or the first of `category_ids`) by name.
fn category(v: &Value, categories: &HashMap<String, String>) -> String {
    let id = v.get("category_id").and_then(as_text).or_else(|| {
        v.get("category_ids")
            .and_then(Value::as_array)
            .and_then(|ids| ids.first())
            .and_then(as_text)
    });
    id.and_then(|c| categories.get(&c).cloned())
        .unwrap_or_default()
}

/// One `get_vod_streams` entry.
pub fn movie(v: &Value, categories: &HashMap<String, String>) -> Listed {
    let name = first_text(v, &["name", "title"]);
    Listed {
        id: text(v, "stream_id"),
        year: year(v, &name),
        category: category(v, categories),
        poster: text(v, "stream_icon"),
        tmdb: tmdb(v),
        rating: rating(v),
        added: v.get("added").and_then(as_u64),
        ext: text(v, "container_extension"),
        adult: v.get("is_adult").and_then(as_u64).is_some_and(|a| a > 0),
        name,
        ..Listed::default()
    }
}

/// One `get_series` entry.
pub fn series(v: &Value, categories: &HashMap<String, String>) -> Listed {
    let name = first_text(v, &["name", "title"]);
    Listed {
        id: text(v, "series_id"),
        year: year(v, &name),
        category: category(v, categories),
        poster: text(v, "cover"),
        tmdb: tmdb(v),
        rating: rating(v),
        added: v.get("last_modified").and_then(as_u64),
        facts: Facts {
            genre: text(v, "genre"),
            cast: first_text(v, &["cast", "actors"]),
            director: text(v, "director"),
            release_date: first_text(v, &["releaseDate", "release_date", "releasedate"]),
            run_time: run_time(v),
        },
        name,
        ..Listed::default()
    }
}

/// `episode_run_time` in minutes; 0 is not said.
fn run_time(v: &Value) -> Option<u16> {
    v.get("episode_run_time")
        .and_then(as_u64)
        .filter(|&m| m > 0)
        .and_then(|m| u16::try_from(m).ok())
}

/// A running time: `duration_secs`, else `duration` (`HH:MM:SS` or `MM:SS`).
fn duration_secs(v: &Value) -> Option<u32> {
    v.get("duration_secs")
        .and_then(as_u64)
        .filter(|&s| s > 0)
        .or_else(|| {
            let text = v.get("duration").and_then(as_text)?;
            let mut secs = 0u64;
            for part in text.split(':') {
                secs = secs
                    .checked_mul(60)?
                    .checked_add(part.trim().parse().ok()?)?;
            }
            (secs > 0).then_some(secs)
        })
        .and_then(|s| u32::try_from(s).ok())
}

/// `backdrop_path`: a list of URLs, or one.
fn backdrop(v: &Value) -> String {
    match v.get("backdrop_path") {
        Some(Value::Array(a)) => a.first().and_then(as_text).unwrap_or_default(),
        Some(other) => as_text(other).unwrap_or_default(),
        None => String::new(),
    }
}

fn details_of(info: &Value) -> Details {
    Details {
        plot: first_text(info, &["plot", "description"]),
        genre: text(info, "genre"),
        cast: first_text(info, &["cast", "actors"]),
        director: text(info, "director"),
        release_date: first_text(info, &["releasedate", "releaseDate", "release_date"]),
        duration_secs: duration_secs(info).or_else(|| run_time(info).map(|m| u32::from(m) * 60)),
        rating: rating(info),
        tmdb: tmdb(info),
        backdrop: backdrop(info),
        image: first_text(info, &["movie_image", "cover_big", "cover"]),
        service: String::new(),
        country: text(info, "country"),
        youtube_trailer: text(info, "youtube_trailer"),
        age_rating: first_text(info, &["mpaa_rating", "age"]),
        episodes: Vec::new(),
    }
}

/// A `get_vod_info` answer; `None` when the panel does not know the movie (`info`
/// empty or missing).
pub fn vod_info(v: &Value) -> Option<Details> {
    let info = v.get("info").filter(|i| i.is_object())?;
    Some(details_of(info))
}

/// A `get_series_info` answer: the series' facts and its episodes (from `episodes`,
/// keyed by season as a string, or a plain list); `None` when the panel does not
/// know the series.
pub fn series_info(v: &Value) -> Option<Details> {
    let info = v.get("info").filter(|i| i.is_object());
    let episodes = v.get("episodes")?;
    let mut d = info.map(details_of).unwrap_or_default();
    let all: Vec<(Option<u64>, &Value)> = match episodes {
        Value::Object(by_season) => by_season
            .iter()
            .flat_map(|(season, list)| {
                let s = season.trim().parse::<u64>().ok();
                list.as_array().into_iter().flatten().map(move |e| (s, e))
            })
            .collect(),
        Value::Array(list) => list
            .iter()
            .flat_map(|l| match l {
                Value::Array(inner) => inner.iter().collect::<Vec<_>>(),
                other => vec![other],
            })
            .map(|e| (None, e))
            .collect(),
        _ => return None,
    };
    for (season, e) in all {
        let id = text(e, "id");
        let season = e.get("season").and_then(as_u64).or(season).unwrap_or(1);
        let Some(number) = e.get("episode_num").and_then(as_u64) else {
            continue;
        };
        if id.is_empty() {
            continue;
        }
        d.episodes.push(ListedEpisode {
            season: u16::try_from(season).unwrap_or(u16::MAX),
            episode: u16::try_from(number).unwrap_or(u16::MAX),
            // As the list's: a title on one line, a short extension or none.
            title: text(e, "title")
                .chars()
                .map(crate::m3u::printable)
                .collect(),
            id,
            ext: super::catalogue::container(&text(e, "container_extension")),
            url: None,
            headers: Vec::new(),
            info: episode_info(e),
        });
    }
    d.episodes.sort_by_key(|e| (e.season, e.episode));
    Some(d)
}

/// An episode's own `info` (plot, image, date, duration, rating) and `added`; `None`
/// when it says none of them.
fn episode_info(e: &Value) -> Option<Box<EpisodeInfo>> {
    let info = e
        .get("info")
        .filter(|i| i.is_object())
        .unwrap_or(&Value::Null);
    let got = EpisodeInfo {
        plot: first_text(info, &["plot", "description"]),
        image: first_text(info, &["movie_image", "cover_big"]),
        release_date: first_text(info, &["releasedate", "release_date", "air_date"]),
        duration_secs: duration_secs(info),
        rating: rating(info),
        added: e.get("added").and_then(as_u64).filter(|&a| a > 0),
    };
    (got != EpisodeInfo::default()).then(|| Box::new(got))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_title_is_its_name_without_the_year() {
        assert_eq!(without_year("Heat (1995)"), "Heat");
        assert_eq!(without_year("Heat - 1995"), "Heat");
        assert_eq!(without_year("Heat 1995"), "Heat 1995");
        assert_eq!(without_year("Blade Runner 2049"), "Blade Runner 2049");
        assert_eq!(without_year("(1995)"), "(1995)");
        assert_eq!(without_year("Amélie (2001) "), "Amélie");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn a_title_not_rated_has_no_rating() {
        // A panel's unrated title: empty rating, 0 out of 5. Not "0.0" stars.
        assert_eq!(rating(&json!({"rating": "", "rating_5based": 0})), None);
        assert_eq!(rating(&json!({"rating": "", "rating_5based": "0"})), None);
        assert_eq!(
            rating(&json!({"rating": "", "rating_5based": 3.5})),
            Some(7.0)
        );
        assert_eq!(
            rating(&json!({"rating": "7.4", "rating_5based": 0})),
            Some(7.4)
        );
    }

    #[test]
    fn lists_take_strings_or_numbers_and_refuse_other_shapes() {
        let cats: HashMap<String, String> = [("7".to_string(), "Drama".to_string())].into();
        let body = br#"[{"stream_id":"12","name":"Heat (1995)","category_id":7,"tmdb":"949","rating":"7.9","container_extension":"mkv","stream_icon":"http://i/p.jpg"},
            {"stream_id":13,"name":"X","category_ids":["7"],"rating_5based":4,"tmdb_id":0}, 5]"#;
        let mut got = Vec::new();
        assert_eq!(
            read_list(body, "get_vod_streams", |v| got.push(movie(&v, &cats))),
            Ok(3)
        );
        assert_eq!(got[0].id, "12");
        assert_eq!(got[0].year, Some(1995));
        assert_eq!(got[0].tmdb, Some(949));
        assert_eq!(got[0].category, "Drama");
        assert_eq!(got[0].ext, "mkv");
        assert_eq!(got[1].id, "13");
        assert_eq!(got[1].rating, Some(8.0));
        assert_eq!(got[1].tmdb, None);
        assert_eq!(got[1].category, "Drama");
        assert!(got[2].id.is_empty());
        for (body, why) in [
            (&b"{}"[..], "object"),
            (b"<html>", "HTML"),
            (b"", "nothing"),
            (b"[{", "broken"),
        ] {
            let e = read_list(body, "get_vod_streams", |_| {}).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        // An empty list is a list (the catalogue keeps a last good one against it).
        assert_eq!(read_list(b"[]", "get_series", |_| {}), Ok(0));
        // A Latin-1 byte in a title is one unreadable character, not a broken list.
        let mut names = Vec::new();
        let latin1 =
            b"[{\"stream_id\":1,\"name\":\"Caf\xe9\"},{\"stream_id\":2,\"name\":\"Heat\"}]";
        assert_eq!(
            read_list(latin1, "get_vod_streams", |v| names
                .push(movie(&v, &cats).name)),
            Ok(2)
        );
        assert_eq!(names, ["Caf\u{fffd}", "Heat"]);
    }

    #[test]
    fn series_info_reads_episodes_keyed_by_season() {
        let v = json!({
            "info": {"name": "S", "plot": "p", "backdrop_path": ["b.jpg"], "tmdb": 5},
            "episodes": {"2": [{"id": "22", "episode_num": "1", "title": "two-one", "container_extension": "mp4"}],
                         "1": [{"id": 11, "episode_num": 2, "season": 1}, {"id": "", "episode_num": 3}]}
        });
        let d = series_info(&v).unwrap();
        assert_eq!(d.plot, "p");
        assert_eq!(d.backdrop, "b.jpg");
        assert_eq!(d.tmdb, Some(5));
        let eps: Vec<(u16, u16, &str)> = d
            .episodes
            .iter()
            .map(|e| (e.season, e.episode, e.id.as_str()))
            .collect();
        assert_eq!(eps, [(1, 2, "11"), (2, 1, "22")]);
        assert_eq!(d.episodes[0].info, None, "nothing said, nothing kept");
        assert!(vod_info(&json!({"info": [], "movie_data": []})).is_none());
        assert_eq!(year_in_name("Movie - 2004"), Some(2004));
        assert_eq!(year_in_name("2001"), None);
    }

    #[test]
    fn episode_and_series_facts_are_kept() {
        let v = json!({
            "info": {"episode_run_time": "45", "country": "US", "mpaa_rating": "TV-MA"},
            "episodes": {"1": [{"id": "7", "episode_num": 1, "added": "1600000000",
                "info": {"plot": "p", "duration": "00:42:30", "movie_image": "http://i/e.jpg",
                         "rating": 8.1, "releasedate": "2002-06-02"}}]}
        });
        let d = series_info(&v).unwrap();
        assert_eq!(d.duration_secs, Some(45 * 60));
        assert_eq!((d.country.as_str(), d.age_rating.as_str()), ("US", "TV-MA"));
        let info = d.episodes[0].info.as_deref().unwrap();
        assert_eq!(info.plot, "p");
        assert_eq!(
            info.duration_secs,
            Some(2550),
            "from `duration` when no `duration_secs`"
        );
        assert_eq!(info.image, "http://i/e.jpg");
        assert_eq!(info.rating, Some(8.1));
        assert_eq!(info.release_date, "2002-06-02");
        assert_eq!(info.added, Some(1_600_000_000));
        let cats = HashMap::new();
        let s = series(
            &json!({"series_id": 1, "name": "S", "cast": "A, B", "director": "D", "genre": "Crime",
                    "releaseDate": "2002-06-02", "episode_run_time": 59}),
            &cats,
        );
        assert_eq!(s.facts.cast, "A, B");
        assert_eq!(s.facts.director, "D");
        assert_eq!(s.facts.genre, "Crime");
        assert_eq!(s.facts.release_date, "2002-06-02");
        assert_eq!(s.facts.run_time, Some(59));
        assert_eq!(s.year, Some(2002));
        assert!(
            movie(
                &json!({"stream_id": 1, "name": "X", "is_adult": "1"}),
                &cats
            )
            .adult
        );
        assert!(!movie(&json!({"stream_id": 1, "name": "X", "is_adult": 0}), &cats).adult);
    }
}
