//! `json_api` services' movies and series (pure): `[services.movies]` and
//! `[services.series]` name a list like `[services.channels]` does, with a JSON
//! pointer per field; a series' episodes are a list inside each entry.

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{Listed, ListedEpisode, VodKind};

/// Where a json_api service lists its movies or series, and how to read each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VodEndpoint {
    /// Joined to `base_url`.
    pub path: String,
    /// Pointer to the array; `""` when the body is the array.
    #[serde(default)]
    pub list: String,
    #[serde(default = "ptr_id")]
    pub id: String,
    #[serde(default = "ptr_name")]
    pub name: String,
    /// Pointer to the media URL: a movie's, or (series) an episode's inside `episodes`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub year: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub poster: Option<String>,
    #[serde(default)]
    pub tmdb: Option<String>,
    /// Series: pointer to the episode list inside an entry.
    #[serde(default)]
    pub episodes: Option<String>,
    /// Series: pointers inside one episode.
    #[serde(default = "ptr_season")]
    pub season: String,
    #[serde(default = "ptr_episode")]
    pub episode: String,
    #[serde(default)]
    pub title: Option<String>,
}

fn ptr_id() -> String {
    "/id".into()
}
fn ptr_name() -> String {
    "/name".into()
}
fn ptr_season() -> String {
    "/season".into()
}
fn ptr_episode() -> String {
    "/episode".into()
}

impl VodEndpoint {
    /// `(field, message)` problems; `prefix` is `movies` or `series`.
    pub fn validate(&self, kind: VodKind, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let pointers = [
            ("list", Some(&self.list)),
            ("id", Some(&self.id)),
            ("name", Some(&self.name)),
            ("url", self.url.as_ref()),
            ("year", self.year.as_ref()),
            ("category", self.category.as_ref()),
            ("poster", self.poster.as_ref()),
            ("tmdb", self.tmdb.as_ref()),
            ("episodes", self.episodes.as_ref()),
            ("season", Some(&self.season)),
            ("episode", Some(&self.episode)),
            ("title", self.title.as_ref()),
        ];
        for (field, p) in pointers {
            if let Some(p) = p.filter(|p| !p.is_empty() && !p.starts_with('/')) {
                out.push((
                    format!("{prefix}.{field}"),
                    format!("`{p}` is not a JSON pointer (it must start with `/`)"),
                ));
            }
        }
        if self.url.is_none() {
            out.push((
                format!("{prefix}.url"),
                "is required: the JSON pointer to the media URL".into(),
            ));
        }
        if kind == VodKind::Series && self.episodes.is_none() {
            out.push((
                format!("{prefix}.episodes"),
                "is required: the JSON pointer to each series' episode list".into(),
            ));
        }
        out
    }
}

fn text(v: &Value, ptr: Option<&str>) -> String {
    match ptr.and_then(|p| v.pointer(p)) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn number(v: &Value, ptr: Option<&str>) -> Option<u64> {
    text(v, ptr).parse().ok()
}

/// A usable media URL at `ptr` of `v` (relative ones against `base`).
fn media_url(v: &Value, ptr: Option<&str>, base: &Url) -> Option<String> {
    let raw = text(v, ptr);
    let url = base.join(&raw).ok().filter(|_| !raw.is_empty())?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

/// The titles of a list answer; entries without an id, a name or (movies) a usable
/// URL are skipped, counted in the second value.
pub fn listed(
    json: &Value,
    ep: &VodEndpoint,
    kind: VodKind,
    base: &Url,
) -> Result<(Vec<Listed>, usize), String> {
    let items = json
        .pointer(&ep.list)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no list at `{}`", ep.list))?;
    let mut out = Vec::with_capacity(items.len());
    let mut skipped = 0;
    for item in items {
        let (id, name) = (text(item, Some(&ep.id)), text(item, Some(&ep.name)));
        let mut l = Listed {
            year: number(item, ep.year.as_deref()).and_then(|y| u16::try_from(y).ok()),
            category: text(item, ep.category.as_deref()),
            poster: text(item, ep.poster.as_deref()),
            tmdb: number(item, ep.tmdb.as_deref())
                .and_then(|t| u32::try_from(t).ok())
                .filter(|&t| t > 0),
            ..Listed::default()
        };
        match kind {
            VodKind::Movie => {
                let Some(url) = media_url(item, ep.url.as_deref(), base) else {
                    skipped += 1;
                    continue;
                };
                l.ext = super::m3u::extension(&url);
                l.url = Some(url);
            }
            VodKind::Series => {
                let episodes = ep
                    .episodes
                    .as_deref()
                    .and_then(|p| item.pointer(p))
                    .and_then(Value::as_array);
                for e in episodes.into_iter().flatten() {
                    let (Some(url), Some(episode)) = (
                        media_url(e, ep.url.as_deref(), base),
                        number(e, Some(&ep.episode)),
                    ) else {
                        skipped += 1;
                        continue;
                    };
                    l.episodes.push(ListedEpisode {
                        season: number(e, Some(&ep.season))
                            .and_then(|s| u16::try_from(s).ok())
                            .unwrap_or(1),
                        episode: u16::try_from(episode).unwrap_or(u16::MAX),
                        title: text(e, ep.title.as_deref()),
                        id: url.clone(),
                        ext: super::m3u::extension(&url),
                        url: Some(url),
                        headers: Vec::new(),
                        info: None,
                    });
                }
                if l.episodes.is_empty() {
                    skipped += 1;
                    continue;
                }
            }
        }
        if id.is_empty() || name.is_empty() {
            skipped += 1;
            continue;
        }
        l.id = id;
        l.name = name;
        out.push(l);
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_movies_and_series_by_pointers() {
        let ep: VodEndpoint = toml::from_str(
            "path = \"m\"\nlist = \"/data\"\nurl = \"/file\"\nyear = \"/y\"\ncategory = \"/g\"",
        )
        .unwrap();
        let base = Url::parse("http://api.example/v1/").unwrap();
        let body = json!({"data": [
            {"id": 1, "name": "Heat", "file": "media/heat.mp4", "y": "1995", "g": "Crime"},
            {"id": 2, "name": "No file"},
            {"id": 3, "name": "Bad", "file": "ftp://x/y.mp4"}
        ]});
        let (got, skipped) = listed(&body, &ep, VodKind::Movie, &base).unwrap();
        assert_eq!(skipped, 2);
        assert_eq!(
            got[0].url.as_deref(),
            Some("http://api.example/v1/media/heat.mp4")
        );
        assert_eq!((got[0].year, got[0].ext.as_str()), (Some(1995), "mp4"));
        let ep: VodEndpoint =
            toml::from_str("path = \"s\"\nurl = \"/u\"\nepisodes = \"/eps\"").unwrap();
        let body = json!([{"id": "s1", "name": "Show", "eps": [
            {"season": 1, "episode": 2, "u": "http://c.example/s1e2.mkv"},
            {"season": 1, "u": "http://c.example/nonum.mkv"}
        ]}]);
        let (got, skipped) = listed(&body, &ep, VodKind::Series, &base).unwrap();
        assert_eq!((got[0].episodes.len(), skipped), (1, 1));
        assert!(ep.validate(VodKind::Series, "series").is_empty());
        let bad: VodEndpoint = toml::from_str("path = \"s\"\nid = \"id\"").unwrap();
        let problems = bad.validate(VodKind::Series, "series");
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["series.id", "series.url", "series.episodes"]);
    }
}
