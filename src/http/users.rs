//! The admin API of viewer accounts: `/api/users` lists and creates, `/api/users/{name}`
//! shows, changes and deletes. Accounts from `[[users]]` are listed but read only
//! here (the config file is never written). No answer holds a password or its hash.

use axum::extract::{Path, Request, State};
use axum::routing::get;
use axum::{Json, Router};

use super::access::Admin;
use super::api::json_object_body;
use super::AppState;
use crate::accounts::{AccountError, AccountPatch, AccountView, ConnInfo};
use crate::http::error::{AppError, ErrorBody};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users", get(list).post(create))
        .route("/api/users/{name}", get(show).patch(change).delete(remove))
}

/// The accounts' operations, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, show, change, remove),
    components(schemas(ErrorBody, AccountView, AccountPatch, ConnInfo))
)]
pub(crate) struct Doc;

/// An account limited to a service that is not configured would see nothing of it:
/// refused, naming the configured ones (names are case-sensitive).
fn known_services(s: &AppState, patch: &AccountPatch) -> Result<(), AppError> {
    let names = s.registry.service_names();
    match patch
        .services
        .iter()
        .flatten()
        .find(|n| !names.contains(&n.as_str()))
    {
        Some(bad) => Err(AppError::BadRequest(format!(
            "`services`: unknown service `{bad}` (configured: {}; names are case-sensitive)",
            names.join(", ")
        ))),
        None => Ok(()),
    }
}

const FIELDS: &str =
    "a JSON object of name, password, max_connections, expires, groups, services, enabled";

/// Every viewer account with its live connections (admin).
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    security(("admin" = [])),
    responses(
        (status = 200, description = "The accounts, by name", body = Vec<AccountView>),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or not on loopback without one", body = ErrorBody)
    )
)]
async fn list(State(s): State<AppState>, _admin: Admin) -> Json<Vec<AccountView>> {
    Json(s.accounts.list())
}

/// Creates a viewer account (admin): `name` and `password` required; `max_connections`
/// 1, no expiry, every group and service, enabled unless given.
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    request_body(content = AccountPatch, example = json!({"name": "bob", "password": "s3cret", "max_connections": 2, "groups": ["News"]})),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The new account", body = AccountView),
        (status = 400, description = "Malformed body, a bad name or expiry, a missing password, or the name is taken", body = ErrorBody),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or not on loopback without one", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn create(
    State(s): State<AppState>,
    _admin: Admin,
    req: Request,
) -> Result<Json<AccountView>, AppError> {
    let patch: AccountPatch = json_object_body(req, FIELDS).await?;
    known_services(&s, &patch)?;
    Ok(Json(s.accounts.create(patch).await?))
}

/// One viewer account (admin).
#[utoipa::path(
    get,
    path = "/api/users/{name}",
    tag = "users",
    params(("name" = String, Path, description = "The account's name")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token, or not on loopback without one", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody)
    )
)]
async fn show(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _admin: Admin,
) -> Result<Json<AccountView>, AppError> {
    let a = s
        .accounts
        .current(&name)
        .await?
        .ok_or_else(|| AccountError::Unknown(name.clone()))?;
    Ok(Json(s.accounts.view(&a)))
}

/// Changes a viewer account made through this API (admin): a given field sets,
/// `"expires": null` clears the expiry, a missing field keeps.
#[utoipa::path(
    patch,
    path = "/api/users/{name}",
    tag = "users",
    params(("name" = String, Path, description = "The account's name")),
    request_body(content = AccountPatch, example = json!({"max_connections": 3, "enabled": false})),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The account now", body = AccountView),
        (status = 400, description = "Malformed body or a bad value", body = ErrorBody),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token, not on loopback without one, or an account from the config file", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn change(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _admin: Admin,
    req: Request,
) -> Result<Json<AccountView>, AppError> {
    let patch: AccountPatch = json_object_body(req, FIELDS).await?;
    if let Some(new) = patch.name.as_deref().filter(|n| *n != name) {
        return Err(AppError::BadRequest(format!(
            "an account's name cannot be changed (`{name}` to `{new}`): create `{new}` \
             (POST /api/users) and delete `{name}`"
        )));
    }
    known_services(&s, &patch)?;
    let view = s.accounts.change(&name, patch).await?;
    s.accounts.enforce(s.registry.last_lineup().as_deref());
    Ok(Json(view))
}

/// Deletes a viewer account made through this API (admin); its open streams end
/// (a `.ts` stream at once, an HLS player at its next playlist fetch).
#[utoipa::path(
    delete,
    path = "/api/users/{name}",
    tag = "users",
    params(("name" = String, Path, description = "The account's name")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "Deleted: the account as it was", body = AccountView),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token, not on loopback without one, or an account from the config file", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn remove(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _admin: Admin,
) -> Result<Json<AccountView>, AppError> {
    let view = s.accounts.delete(&name).await?;
    s.accounts.enforce(s.registry.last_lineup().as_deref());
    Ok(Json(view))
}
