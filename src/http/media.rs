//! The response of a title's media (`/api/movie/{id}`, `/api/episode/{id}` and the
//! Xtream `/movie/`, `/series/` paths call [`play`] with the title's sources): a
//! progressive file passed through with its range (`206`, `Content-Range`,
//! `Accept-Ranges`, `Content-Length`), `HEAD` answered without a body, or an HLS VOD
//! playlist rewritten. The work (fallback between sources, what counts as media) is
//! `crate::streams::media`'s.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::stream::{media_response, media_type, passthrough_response, playlist_response};
use crate::app::AppState;
use crate::http::error::AppError;
use crate::proxy::Kind;
use crate::streams::media::{MediaSource, Played};
use crate::streams::Engine;

/// Plays the first of `sources` that answers with media, for a `GET` or `HEAD` with
/// `headers` (its `Range` is passed on). Every source failing is a 502 (504 when all
/// timed out) listing each.
pub async fn play(
    state: &AppState,
    what: &str,
    sources: Vec<MediaSource>,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let base = super::base_url(&state.config, headers);
    let range = super::stream::request_range(headers);
    let played = Engine::of(state)
        .play_media(what, &sources, range, &base)
        .await;
    let head = method == Method::HEAD;
    match played {
        Err(e) => AppError::from(e).into_response(),
        Ok(Played::Playlist(body)) => {
            let len = body.len();
            let mut resp = playlist_response(body);
            if head {
                // The length a `GET` would have, not the empty body's.
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
                *resp.body_mut() = Body::empty();
            }
            resp
        }
        Ok(Played::RangeNotSatisfiable(content_range)) => {
            let mut resp = media_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "application/octet-stream",
                Some(0),
                content_range.as_deref(),
                Body::empty(),
            );
            resp.headers_mut().remove(header::CACHE_CONTROL);
            resp
        }
        Ok(Played::File(fetched)) => {
            let ctype = file_type(fetched.content_type.as_deref(), fetched.url.path());
            // A HEAD drops the upstream body unread: its connection closes here.
            passthrough_response(fetched, &ctype, head)
        }
    }
}

/// The type a file is served with: the upstream's when it names a media type, else
/// one known from the file's extension, else `application/octet-stream` (never a type
/// a browser would render or run).
fn file_type(upstream: Option<&str>, path: &str) -> String {
    let generic = |t: &str| {
        let t = t.trim().to_ascii_lowercase();
        t.is_empty() || t.starts_with("application/octet-stream") || t.starts_with("binary/")
    };
    if let Some(t) = upstream.filter(|t| !generic(t)) {
        let passed = media_type(Some(t), Kind::Media);
        if passed == t {
            return t.to_string();
        }
    }
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "ts" | "m2ts" | "mts" => "video/mp2t",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "flv" => "video/x-flv",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        _ => "application/octet-stream",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::file_type;

    #[test]
    fn types_come_from_upstream_else_the_extension() {
        assert_eq!(
            file_type(Some("video/x-matroska"), "/a.bin"),
            "video/x-matroska"
        );
        assert_eq!(
            file_type(Some("application/octet-stream"), "/m/1.mkv"),
            "video/x-matroska"
        );
        assert_eq!(file_type(None, "/movie/u/p/7.MP4"), "video/mp4");
        assert_eq!(file_type(Some("text/html"), "/x.ts"), "video/mp2t");
        assert_eq!(
            file_type(Some("image/svg+xml"), "/x"),
            "application/octet-stream"
        );
        assert_eq!(file_type(None, "/noext"), "application/octet-stream");
    }
}
