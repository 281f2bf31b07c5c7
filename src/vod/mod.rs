//! Movies and series ("VOD"): the catalogue freesky builds from every service that
//! lists titles, merged across services like channels, with ids that never change.
//!
//! - `catalogue`: the merged catalogue in compact form (pure): interned names, one
//!   small item per listed title, merged titles as references to them, search and paging.
//! - `library`: the running catalogue (`Library`): refreshes from the services, keeps
//!   each service's last good list through bad answers, numbers titles and episodes
//!   in the store, fetches details on demand (cached) and picks a title's media sources.
//! - `xtream`, `m3u`, `json_api`: readers of each kind's answers (pure), called by the
//!   kinds' `Service` implementations.
//!
//! Nothing here speaks HTTP to clients: `http::vod` and `http::xtream` shape the answers.

pub mod catalogue;
pub mod json_api;
pub mod library;
pub mod m3u;
pub mod xtream;

pub use library::Library;

use crate::model::Headers;

/// Movies or series: the two catalogues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VodKind {
    Movie,
    Series,
}

impl VodKind {
    /// The store namespace of the kind's stable ids.
    pub fn namespace(self) -> &'static str {
        match self {
            Self::Movie => "vod.movie",
            Self::Series => "vod.series",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Movie => "movie",
            Self::Series => "series",
        }
    }
}

/// One title as a service lists it, read once per refresh and then kept compact
/// (`catalogue::Item`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Listed {
    /// The service's own id (Xtream `stream_id` / `series_id`, an M3U entry's URL...).
    pub id: String,
    pub name: String,
    pub year: Option<u16>,
    /// The category (Xtream category name, M3U `group-title`); empty: none.
    pub category: String,
    /// Poster image URL; empty: none.
    pub poster: String,
    pub tmdb: Option<u32>,
    /// Out of 10.
    pub rating: Option<f32>,
    /// Unix seconds the service added it.
    pub added: Option<u64>,
    /// Container extension of a movie's file (`mp4`, `mkv`); empty: unknown.
    pub ext: String,
    /// The media's URL when the list names it (M3U, json_api); `None`: the service
    /// builds it from `id` (`Service::vod_url`).
    pub url: Option<String>,
    /// Headers the media's requests must carry (M3U `#EXTVLCOPT`).
    pub headers: Headers,
    /// A series' episodes, when the list itself carries them (M3U, json_api); Xtream
    /// panels list them only in the series' details.
    pub episodes: Vec<ListedEpisode>,
    /// Marked for adults (Xtream `is_adult`), so players can hide it.
    pub adult: bool,
    /// The short facts a series list entry carries (Xtream `get_series`); empty for
    /// the other lists. The plot is left to the details (`Details`).
    pub facts: Facts,
}

/// The short facts of a list entry beyond its name and year, kept in the compact
/// catalogue (`catalogue::Facts`) so a series list answers them without asking the
/// panel per series. Long text (the plot) is not here: it comes with the details.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Facts {
    pub genre: String,
    pub cast: String,
    pub director: String,
    /// The full release date as the service wrote it (`2002-06-02`).
    pub release_date: String,
    /// Minutes an episode runs (Xtream `episode_run_time`).
    pub run_time: Option<u16>,
}

impl Facts {
    pub fn is_empty(&self) -> bool {
        self.genre.is_empty()
            && self.cast.is_empty()
            && self.director.is_empty()
            && self.release_date.is_empty()
            && self.run_time.is_none()
    }
}

/// One episode of a series, as a service lists it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ListedEpisode {
    pub season: u16,
    pub episode: u16,
    pub title: String,
    /// The service's id of the episode (Xtream episode `id`).
    pub id: String,
    pub ext: String,
    pub url: Option<String>,
    pub headers: Headers,
    /// What the service says about the episode itself (Xtream `get_series_info`'s
    /// per-episode `info` and `added`); `None`: nothing (M3U, json_api).
    pub info: Option<Box<EpisodeInfo>>,
}

/// One episode's own facts, as a series' details carry them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EpisodeInfo {
    pub plot: String,
    /// The episode's still image URL; empty: none (the series' cover stands in).
    pub image: String,
    pub release_date: String,
    pub duration_secs: Option<u32>,
    /// Out of 10.
    pub rating: Option<f32>,
    /// Unix seconds the service added it.
    pub added: Option<u64>,
}

/// What a service says about one title beyond its list entry, fetched on demand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    pub plot: String,
    pub genre: String,
    pub cast: String,
    pub director: String,
    pub release_date: String,
    pub duration_secs: Option<u32>,
    pub rating: Option<f32>,
    pub tmdb: Option<u32>,
    pub backdrop: String,
    /// The title's own poster as the details give it (Xtream `movie_image`,
    /// `cover_big`, `cover`); empty: none. Shown when the list gave no poster.
    pub image: String,
    /// The service the details came from: images in them are fetched with its
    /// headers (`[logos]`).
    pub service: String,
    pub country: String,
    pub youtube_trailer: String,
    /// The age rating (Xtream `mpaa_rating`, else `age`).
    pub age_rating: String,
    /// A series' episodes (empty for movies).
    pub episodes: Vec<ListedEpisode>,
}

/// A service's movies and series as one refresh read them; `None` for a kind the
/// service does not list, an error for a list that could not be had (the last good
/// one is kept).
#[derive(Debug, Default)]
pub struct VodLists {
    pub movies: Option<Result<Vec<Listed>, crate::error::UpstreamError>>,
    pub series: Option<Result<Vec<Listed>, crate::error::UpstreamError>>,
    /// Entries skipped as unusable (no URL, no name, no episode number).
    pub skipped: usize,
}

/// One place a movie or episode can be played from, tried in order at play time.
pub use crate::streams::media::MediaSource;
