//! `GET /api/channels`: one page of the lineup's listed channels, filtered on the
//! server (`q`, `group`, `service`), with the total and the group counts. It is what
//! the dashboard's channel browser reads, so that a lineup of a hundred thousand
//! channels costs the page one small answer per screen instead of one huge page.
//!
//! It reads the shared lineup snapshot (an `Arc`) and serializes references into it:
//! a request never clones the lineup. Matching by `q` is the lineup's own search (the
//! one `/api/channels/search` uses), so both agree on what matches.

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::http::error::{AppError, ErrorBody};
use crate::model::LineupChannel;

/// Channels per page when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;
/// The largest `limit` accepted: a page stays a few hundred kilobytes at most.
pub(crate) const MAX_LIMIT: usize = 500;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/channels", get(page))
}

/// The paged listing, for `/api/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(page), components(schemas(ChannelPage, GroupCount, Live)))]
pub(crate) struct Doc;

/// The query of `GET /api/channels`. Numbers are taken as text and checked here, so
/// that a bad one is a JSON 400 naming the parameter.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// The first channel of the page, counted from 0 in number order (default 0).
    #[param(value_type = Option<u64>)]
    offset: Option<String>,
    /// Channels in the page, 0 to 500 (default 50; 0 answers only the counts).
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
    /// Words to look for in names, groups and tags; case and accents ignored.
    q: Option<String>,
    /// Only channels of this group (exactly).
    group: Option<String>,
    /// Only channels with a source from this service (its configured name).
    service: Option<String>,
}

/// One page of channels.
#[derive(Serialize, utoipa::ToSchema)]
struct ChannelPage<'a> {
    /// Channels matching every filter, in all pages.
    total: usize,
    /// The `offset` asked for.
    offset: usize,
    /// The `limit` applied.
    limit: usize,
    /// The page: lineup channels as `/api/channels/all` shows them, in number order.
    #[schema(value_type = Vec<LineupChannel>)]
    items: Vec<&'a LineupChannel>,
    /// The groups of the channels matching `q` and `service` (whatever `group` is),
    /// sorted by name, with how many channels each has: what a group filter offers.
    groups: Vec<GroupCount<'a>>,
    /// What is on now and next and how many watch, for the channels of this page,
    /// by channel id.
    live: HashMap<&'a str, Live>,
}

/// A group and its channel count.
#[derive(Serialize, utoipa::ToSchema)]
struct GroupCount<'a> {
    #[schema(value_type = String)]
    name: &'a str,
    count: usize,
}

/// A channel's guide now/next and its current viewers.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Live {
    /// The programme on now (`null`: none known).
    pub(super) now: Option<String>,
    /// The programme after it.
    pub(super) next: Option<String>,
    /// Players streaming it now through freesky (`.ts` sessions and HLS players).
    pub(super) viewers: usize,
}

/// A page of the lineup's listed channels, filtered and counted on the server.
#[utoipa::path(
    get,
    path = "/api/channels",
    tag = "channels",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of matching channels, the total and the group counts", body = ChannelPage),
        (status = 400, description = "`offset` or `limit` is not a whole number, or `limit` is over 500", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn page(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(|e| AppError::BadRequest(format!("bad query string: {e}")))?;
    let offset = number("offset", query.offset.as_deref(), 0, usize::MAX)?;
    let limit = number("limit", query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let group = query.group.as_deref().unwrap_or_default();
    let service = query.service.as_deref().unwrap_or_default();

    let lineup = super::logos::lineup(&s, &headers).await?;
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    let mut items = Vec::with_capacity(limit.min(1024));
    let mut total = 0;
    for c in lineup.search(query.q.as_deref().unwrap_or_default()) {
        if !service.is_empty() && !c.sources.iter().any(|src| src.service == service) {
            continue;
        }
        // Channels without a group are counted and chosen as players see them.
        let shown = crate::accounts::shown_group(&c.group);
        *groups.entry(shown).or_default() += 1;
        if !group.is_empty() && shown != group {
            continue;
        }
        if total >= offset && items.len() < limit {
            items.push(c);
        }
        total += 1;
    }
    let live = live(&s, &items).await;
    let body = ChannelPage {
        total,
        offset,
        limit,
        groups: groups
            .into_iter()
            .map(|(name, count)| GroupCount { name, count })
            .collect(),
        items,
        live,
    };
    // Serialized here, while the lineup snapshot the page borrows from is held.
    let json =
        serde_json::to_vec(&body).map_err(|e| AppError::Internal(format!("channel page: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// A whole number in `0..=max` from the query, `default` when absent or empty.
pub(super) fn number(
    name: &str,
    raw: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, AppError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(default);
    };
    match raw.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(AppError::BadRequest(format!(
            "`{name}` is at most {max}, got {raw}"
        ))),
        Err(_) => Err(AppError::BadRequest(format!(
            "`{name}` must be a whole number from 0, got `{raw}`"
        ))),
    }
}

/// Guide now/next and viewers of `items`, by id. Each channel's programmes are looked
/// up alone, so a page costs the same whatever the size of the guide.
pub(super) async fn live<'a>(s: &AppState, items: &[&'a LineupChannel]) -> HashMap<&'a str, Live> {
    let now = chrono::Utc::now().timestamp();
    let viewers = s.sessions.viewers();
    let mut out = HashMap::with_capacity(items.len());
    for c in items {
        // Programmes ending after now, in start order: the first one started is on.
        let listings = s.guides.listings(c.id.as_str(), now).await;
        let on = listings.iter().position(|p| p.start <= now);
        let next = match on {
            Some(i) => listings.get(i + 1),
            None => listings.first(),
        };
        // `.ts` viewers are joined by id, or by number through `/api/stream/{n}.ts`.
        let viewers = viewers.get(c.id.as_str()).copied().unwrap_or(0)
            + viewers.get(&c.number.to_string()).copied().unwrap_or(0);
        let live = Live {
            now: on.map(|i| listings[i].title.to_string()),
            next: next.map(|p| p.title.to_string()),
            viewers,
        };
        out.insert(c.id.as_str(), live);
    }
    out
}
