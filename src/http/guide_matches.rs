//! `/api/guide/matches`: which guide channel each lineup channel takes its programmes
//! from, with the score, the reason and the alternatives; and the admin's decisions
//! (confirm, reject, pick, reset), which the guide applies at once and keeps.

use axum::extract::{Path, Query, Request, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::access::Admin;
use super::api::json_object_body;
use super::channels_page::number;
use super::AppState;
use crate::guide::Action;
use crate::guide_match::table::{Alternative, Entry, State as MatchState};
use crate::http::error::{AppError, ErrorBody};

/// Items per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Automatic matches scoring below this are listed as low-confidence (`state=low`).
const LOW_SCORE: f32 = 0.97;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/guide/matches", get(list))
        .route("/api/guide/matches/{channel}", post(decide))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, decide),
    components(schemas(MatchPage, Entry, Alternative, MatchState, DecisionBody))
)]
pub(crate) struct Doc;

/// The query of `GET /api/guide/matches`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// `unmatched` (no guide channel), `low` (automatic matches below 0.97,
    /// channels left unmatched that have alternatives, and decisions whose guide
    /// channel is `gone`), or `all` (default).
    state: Option<String>,
    /// Items skipped (default 0).
    #[param(value_type = Option<usize>)]
    offset: Option<String>,
    /// Items returned (default 100, at most 1000; more is refused, as on
    /// `/api/channels`).
    #[param(value_type = Option<usize>)]
    limit: Option<String>,
}

/// One page of the match table, in lineup order.
#[derive(Serialize, utoipa::ToSchema)]
struct MatchPage {
    /// Lines matching `state`, all pages together.
    total: usize,
    items: Vec<Entry>,
}

/// The lineup's guide matches, one line per listed channel (admin).
#[utoipa::path(
    get,
    path = "/api/guide/matches",
    operation_id = "guide_matches",
    tag = "guide",
    params(ListQuery),
    security(("admin" = [])),
    responses(
        (status = 200, description = "One page of the match table", body = MatchPage),
        (status = 400, description = "An unknown `state`, an `offset` or `limit` that is not a whole number, a `limit` over 1000, or a malformed query", body = ErrorBody),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or not on loopback without one", body = ErrorBody),
        (status = 503, description = "Right after a start, a guide is still being read after 10 s and has no saved copy to stand in: which, and since when; with `Retry-After: 10`", body = ErrorBody)
    )
)]
async fn list(
    State(s): State<AppState>,
    _admin: Admin,
    Query(q): Query<ListQuery>,
) -> Result<Json<MatchPage>, AppError> {
    let keep: fn(&Entry) -> bool = match q.state.as_deref().unwrap_or("all") {
        "all" => |_| true,
        "unmatched" => |e| e.state == MatchState::Unmatched,
        "low" => |e| match e.state {
            MatchState::Auto => e.score.is_some_and(|s| s < LOW_SCORE),
            MatchState::Unmatched => !e.alternatives.is_empty() || e.gone,
            MatchState::Picked | MatchState::Confirmed => e.gone,
            _ => false,
        },
        other => {
            return Err(AppError::BadRequest(format!(
                "state must be unmatched, low or all, not `{other}`"
            )))
        }
    };
    let offset = number("offset", q.offset.as_deref(), 0, usize::MAX)?;
    let limit = number("limit", q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    // The table is built with the guides: the first call reads them all.
    ready(&s).await?;
    let table = s.guides.matches_now().await?;
    let lines: Vec<&Entry> = table.entries.iter().filter(|e| keep(e)).collect();
    let items = lines
        .iter()
        .skip(offset)
        .take(limit)
        .map(|e| (*e).clone())
        .collect();
    Ok(Json(MatchPage {
        total: lines.len(),
        items,
    }))
}

/// Waits (bounded) until the guides have been read for the match table: a 503 naming
/// the guides still being read after a restart, not a call held until their
/// `read_timeout`.
async fn ready(s: &AppState) -> Result<(), AppError> {
    match s.guides.ready_to_match().await {
        Ok(()) => Ok(()),
        Err(crate::guide::MatchWait::Failed(e)) => Err(e.into()),
        // Asked again in as long as the dashboard waits before it asks again.
        Err(crate::guide::MatchWait::Reading(why)) => Err(AppError::NotYet {
            why,
            retry_after: 10,
        }),
    }
}

/// The body of `POST /api/guide/matches/{channel}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// `confirm` (keep the current match), `reject` (no guide channel), `pick` (the
    /// guide channel `guide_id`), or `reset` (forget the decision).
    action: String,
    /// With `pick`: the guide channel's XMLTV id.
    guide_id: Option<String>,
    /// With `pick`: the guide (service or extra guide name) to take it from; default
    /// the first that lists it.
    source: Option<String>,
}

/// Decides a channel's guide match (admin): persisted, then the guide follows (the
/// guides concerned are read again in the background). A match by id, which the
/// channel mapping's `tvg_id` sets, stays ahead of any decision.
#[utoipa::path(
    post,
    path = "/api/guide/matches/{channel}",
    operation_id = "guide_match_decide",
    tag = "guide",
    params(("channel" = String, Path, description = "The lineup channel's slug, number, or `SERVICE:ID` of one of its sources")),
    request_body(content = DecisionBody, example = json!({"action": "pick", "guide_id": "BBCOne.uk"})),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The channel's line of the match table now", body = Entry),
        (status = 400, description = "A bad body, nothing to confirm, or no guide lists `guide_id`", body = ErrorBody),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; or a cross-site call", body = ErrorBody),
        (status = 404, description = "No such channel, or a hidden one (nothing is stored)", body = ErrorBody),
        (status = 503, description = "Right after a start, a guide is still being read after 10 s and has no saved copy to stand in (nothing is stored; with `Retry-After: 10`); or the state store does not answer", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn decide(
    State(s): State<AppState>,
    Path(channel): Path<String>,
    _admin: Admin,
    req: Request,
) -> Result<Json<Entry>, AppError> {
    let body: DecisionBody = json_object_body(
        req,
        "a JSON object {\"action\": \"confirm\" | \"reject\" | \"pick\" | \"reset\", \"guide_id\"?, \"source\"?}",
    )
    .await?;
    let action = match (body.action.as_str(), body.guide_id) {
        ("confirm", None) => Action::Confirm,
        ("reject", None) => Action::Reject,
        ("reset", None) => Action::Reset,
        ("pick", Some(guide_id)) if !guide_id.trim().is_empty() => Action::Pick {
            guide_id,
            source: body.source,
        },
        ("pick", _) => {
            return Err(AppError::BadRequest(
                "`pick` needs a `guide_id`".to_string(),
            ))
        }
        ("confirm" | "reject" | "reset", Some(_)) => {
            return Err(AppError::BadRequest(format!(
                "`{}` takes no `guide_id`",
                body.action
            )))
        }
        (other, _) => {
            return Err(AppError::BadRequest(format!(
                "action must be confirm, reject, pick or reset, not `{other}`"
            )))
        }
    };
    let detail = s.registry.channel(&channel).await?;
    let id = detail.channel.id;
    if detail.hidden {
        // Nothing is kept for it: the table lines up listed channels only.
        return Err(AppError::NotFound(format!(
            "channel `{id}` is hidden: guide matching is for listed channels (unhide it first)"
        )));
    }
    ready(&s).await?;
    let entry = s.guides.decide(&id, action).await?;
    entry
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("channel `{id}` is not listed")))
}
