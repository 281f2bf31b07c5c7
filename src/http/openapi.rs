//! `GET /api/openapi.json`: the OpenAPI 3 document of every route, generated from the
//! `#[utoipa::path]` annotations on the handlers. Each area's file documents its own
//! routes in a `Doc` (`#[derive(utoipa::OpenApi)]`); this file merges them, adds
//! the `admin` bearer scheme and the answers a layer gives rather than the handler
//! (a body too large; the logins `require_account` asks for), and serves the result,
//! built once.
//!
//! A route added without an annotation is caught by `tests/it/openapi.rs`, which reads
//! every `.route(...)` in `src/http/` and looks for it in the document.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi as _;

use super::{
    api, channels_page, dashboard, guide, guide_matches, hdhr, logos, metrics, playlist, ready,
    reload, stream, timeshift, users, xtream, AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(document))
}

/// The top of the document: info, tags and this file's own operation.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "freesky",
        version = env!("CARGO_PKG_VERSION"),
        description = "IPTV bridge: merges many upstream streaming services into one M3U/HLS \
            source, an XMLTV guide and an emulated HDHomeRun tuner. Every error answers \
            `ErrorBody` (`{\"error\": ..., \"detail\": ...}`). Admin operations (security \
            `admin`) need `Authorization: Bearer <server.admin_token>` when a token is set, \
            else must come from loopback. State-changing calls from another site's page \
            (`Sec-Fetch-Site: cross-site`, or an `Origin` other than freesky's own) are \
            refused with 403, and so is every request but the media routes (`/api/stream/`, \
            `/proxy/`, `/auto/`, `/tuners/{n}/auto/`) whose `Host` is not one of freesky's \
            names (an IP address, `localhost`, this machine's name, `public_url`'s host, \
            `server.allowed_hosts`)."
    ),
    paths(document),
    tags(
        (name = "meta", description = "Health, metrics and this document"),
        (name = "dashboard", description = "The web dashboard"),
        (name = "services", description = "Upstream services: status, switches, priority"),
        (name = "channels", description = "The lineup's channels: listing, search, mapping, tests"),
        (name = "streams", description = "Playing channels: HLS playlists, MPEG-TS, proxied links"),
        (name = "playlist", description = "The merged M3U playlist"),
        (name = "guide", description = "The merged XMLTV guide"),
        (name = "logos", description = "Channel logos and guide icons served by freesky"),
        (name = "hdhomerun", description = "HDHomeRun tuner emulation, virtual tuners included"),
        (name = "config", description = "The configuration file"),
        (name = "users", description = "Viewer accounts (admin)"),
        (name = "xtream-output", description = "Xtream Codes output for players that log in"),
        (name = "vod", description = "Movies and series: the catalogue, details and media")
    )
)]
struct Top;

/// The merged document, serialized once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    build()
        .to_json()
        .expect("an OpenAPI document always serializes")
});

/// Every area's operations merged under `Top`, with the `admin` security scheme that
/// admin operations name.
pub(crate) fn build() -> utoipa::openapi::OpenApi {
    let mut doc = Top::openapi();
    doc.merge(api::Doc::openapi());
    doc.merge(channels_page::Doc::openapi());
    doc.merge(stream::Doc::openapi());
    doc.merge(timeshift::Doc::openapi());
    doc.merge(playlist::Doc::openapi());
    doc.merge(hdhr::Doc::openapi());
    doc.merge(guide::Doc::openapi());
    doc.merge(logos::Doc::openapi());
    doc.merge(guide_matches::Doc::openapi());
    doc.merge(metrics::Doc::openapi());
    doc.merge(dashboard::Doc::openapi());
    doc.merge(reload::Doc::openapi());
    doc.merge(users::Doc::openapi());
    doc.merge(xtream::Doc::openapi());
    doc.merge(super::vod::Doc::openapi());
    doc.merge(ready::Doc::openapi());
    add_layer_responses(&mut doc);
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`server.admin_token`; when none is set, admin calls are \
                         accepted from loopback only",
                    ))
                    .build(),
            ),
        );
    doc
}

/// The answers of the layers in front of the handlers, on each operation whose own
/// annotation does not list them: a body larger than its route takes is a 413; with
/// `server.require_account`, the lineup API (`viewer::is_lineup_api`) answers the
/// admin only, and the viewer routes (`viewer::ROUTES`) a login, each 401 without and
/// 403 when refused. `tests/it/openapi.rs` calls every operation so configured and
/// finds each status it gets documented.
fn add_layer_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let lineup_api = super::viewer::is_lineup_api(path);
        let viewer = super::viewer::ROUTES.contains(&path.as_str());
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let mut add = |code: &str, description: &str| {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| error(description).into());
            };
            if op.request_body.is_some() {
                add("413", "The body is larger than this call takes");
            }
            if lineup_api {
                add(
                    "401",
                    "`server.require_account` and no admin token: the lineup API is the admin's",
                );
                add(
                    "403",
                    "`server.require_account` and a wrong admin token, or none set and a caller not on loopback",
                );
            }
            if viewer {
                add(
                    "401",
                    "`server.require_account` and no login, or a wrong one",
                );
                add(
                    "403",
                    "`server.require_account` and an account disabled, expired or at its connection limit, or a wrong admin token",
                );
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object, content_type = "application/json"))
)]
async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}
