//! Who may call what, decided before a handler runs.
//!
//! - `guard` (a layer over every route): a request whose `Host` is not one of
//!   freesky's names is refused (a web page reaching freesky through a rebound DNS
//!   name sends its own name); a state-changing request (any method but GET, HEAD,
//!   OPTIONS) from another site's page is refused (`Sec-Fetch-Site: cross-site`, or an
//!   `Origin` that is not freesky's own); pages and API answers carry
//!   `X-Frame-Options: DENY` so no other site can frame them.
//! - `Admin` (an extractor): a handler that takes it runs only for the admin: the
//!   bearer token when one is set, else a caller on loopback. Viewer accounts take the
//!   same shape: an extractor of their own over `bearer` and `peer`.
//!
//! The media routes players fetch (`/api/stream/`, `/api/timeshift/`, `/proxy/`, `/packaged/`, `/live/`, `/auto/`,
//! `/tuners/{n}/auto/`) skip the Host check and the frame headers: they change
//! nothing and show no settings (any page may already load them by IP as media), and
//! a player or DVR that stored stream URLs under a name keeps playing while the
//! playlist, lineup and guide it refreshes say what to fix.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::config::Config;
use crate::http::error::AppError;

/// The names and origin freesky answers as, from its config and this machine.
pub struct Access {
    /// Exact host names, lowercase: the machine's names, `public_url`'s host and
    /// `allowed_hosts` entries.
    names: HashSet<String>,
    /// `allowed_hosts` entries `*.NAME`, as `.NAME`.
    suffixes: Vec<String>,
    /// `allowed_hosts` has `*`: any name.
    any: bool,
    /// `public_url`'s origin (scheme, host, port), when one is set.
    public: Option<(String, String, u16)>,
    /// Host names refused lately, so that each is logged once in a while, not per
    /// request (a player retrying, or a scan, would flood the log).
    refused: moka::sync::Cache<String, ()>,
}

impl Access {
    pub fn new(config: &Config) -> Self {
        let server = &config.server;
        let mut names: HashSet<String> = machine_names().into_iter().collect();
        let public = server
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| {
                let host = normalise(u.host_str()?);
                Some((u.scheme().to_string(), host, u.port_or_known_default()?))
            });
        if let Some((_, host, _)) = &public {
            names.insert(host.clone());
        }
        let mut suffixes = Vec::new();
        let mut any = false;
        for entry in &server.allowed_hosts {
            let entry = normalise(entry);
            if entry == "*" {
                any = true;
            } else if let Some(domain) = entry.strip_prefix('*') {
                suffixes.push(domain.to_string());
            } else {
                names.insert(entry);
            }
        }
        Self {
            names,
            suffixes,
            any,
            public,
            refused: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
        }
    }

    /// Whether `host` (without port, brackets kept for IPv6) is one of freesky's names.
    fn allows(&self, host: &str) -> bool {
        let host = normalise(host);
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        self.any
            || literal.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.names.contains(&host)
            || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }

    /// Whether `origin` (an `Origin` header) is freesky's own: the request's own
    /// host and port (`host`, from its `Host` header) or `public_url`'s origin.
    fn own_origin(&self, origin: &str, host: Option<&str>) -> bool {
        let Ok(url) = url::Url::parse(origin) else {
            return false; // `null` (a sandboxed or file page) and anything malformed
        };
        let (Some(o_host), Some(o_port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        let o_host = normalise(o_host);
        let same_as_host = host
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
            .is_some_and(|a| {
                normalise(a.host()) == o_host
                    && a.port_u16().unwrap_or(o_port) == o_port
                    && matches!(url.scheme(), "http" | "https")
            });
        same_as_host
            || self
                .public
                .as_ref()
                .is_some_and(|(s, h, p)| *s == url.scheme() && *h == o_host && *p == o_port)
    }
}

/// Lowercase, without a trailing dot (`tv.example.` is `tv.example`).
fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// This machine's host name and its mDNS `.local` name (and, for a dotted name, its
/// first label and that label's `.local` name). Read from the kernel on Linux; none
/// elsewhere (list them in `server.allowed_hosts` there).
fn machine_names() -> Vec<String> {
    let name = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|n| normalise(n.trim()))
        .filter(|n| !n.is_empty());
    let Some(name) = name else {
        return Vec::new();
    };
    let mut names = vec![name.clone()];
    let label = name.split('.').next().unwrap_or_default().to_string();
    names.push(format!("{label}.local"));
    if label != name {
        names.push(label);
    }
    names
}

/// A request's path as the log shows it: the login of an Xtream route (`/live/U/P/…`,
/// `/movie/`, `/series/`, `/timeshift/`, and the short `/U/P/{id}`) left out, as
/// passwords are never logged.
fn shown_path(path: &str) -> String {
    let mut parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let login_at = match parts.first().copied() {
        Some("live" | "movie" | "series" | "timeshift") => 1,
        Some("api" | "proxy" | "packaged" | "logos" | "auto" | "tuners") => return path.into(),
        // The short form `/U/P/{id}` (and anything as long): its first two parts.
        Some(_) if parts.len() >= 3 => 0,
        _ => return path.into(),
    };
    for part in parts.iter_mut().skip(login_at).take(2) {
        *part = "…";
    }
    format!("/{}", parts.join("/"))
}

/// The routes media players fetch (see the module doc).
fn is_media(path: &str) -> bool {
    if path.starts_with("/api/stream/")
        || path.starts_with("/api/timeshift/")
        || path.starts_with("/proxy/")
        || path.starts_with("/packaged/")
        || path.starts_with("/live/")
    {
        return true;
    }
    if path.starts_with("/auto/") {
        return true;
    }
    // `/tuners/{n}/auto/...`
    path.strip_prefix("/tuners/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, rest)| rest.starts_with("auto/"))
}

/// The Host check, the cross-site check and the frame headers (see the module doc).
pub async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let media = is_media(req.uri().path());
    let host = request_host(&req);
    // A Host no client could have been given (a port past 65535, spaces, quotes) would
    // be written into every link of the answer: refused on every route.
    if let Some(h) = host.as_deref().filter(|h| !h.is_empty()) {
        // (`Authority::port` is `None` for a port that is no u16, as for none.)
        let well_formed = h.parse::<axum::http::uri::Authority>().is_ok_and(|a| {
            let has_port = a
                .as_str()
                .rsplit(']')
                .next()
                .is_some_and(|r| r.contains(':'));
            !has_port || a.port_u16().is_some()
        });
        if !well_formed {
            return AppError::BadRequest(format!(
                "malformed Host header `{}`: a host name or address, and a port up to 65535",
                shown(h)
            ))
            .into_response();
        }
    }
    if !media {
        if let Some(h) = host.as_deref() {
            let name = h
                .parse::<axum::http::uri::Authority>()
                .map(|a| a.host().to_string())
                .unwrap_or_else(|_| h.to_string());
            if !access.allows(&name) {
                // Players show "login failed", never this answer: the log says why (a
                // few names at a time: random names are a scan, not a player).
                if !access.refused.contains_key(&name) && access.refused.entry_count() < 20 {
                    access.refused.insert(name.clone(), ());
                    tracing::warn!(
                        host = %name.escape_debug(),
                        path = %shown_path(req.uri().path()),
                        "refused a request for a host name that is not this server's \
                         (logged once per name every 10 min): add it to server.allowed_hosts \
                         if clients use it"
                    );
                }
                return AppError::Forbidden(format!(
                    "host not allowed: `{}` is not a name of this freesky server; add it to \
                     server.allowed_hosts (or set server.public_url to the address clients use)",
                    shown(&name)
                ))
                .into_response();
            }
        }
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Err(e) = same_site(&access, req.headers(), host.as_deref()) {
            return e.into_response();
        }
    }
    let mut response = next.run(req).await;
    if !media {
        let headers = response.headers_mut();
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'none'"),
            );
        }
    }
    response
}

/// The name the request was sent to: its `Host` header, else the authority of an
/// absolute request target; `None` for a request naming neither (HTTP/1.0; no browser
/// sends such a request, so it cannot come from a rebound name).
/// A header value as an error message shows it: control characters as `?` (the JSON
/// body escapes the rest once).
fn shown(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn request_host(req: &Request) -> Option<String> {
    match req.headers().get(header::HOST) {
        Some(v) => Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        None => req.uri().authority().map(|a| a.as_str().to_string()),
    }
}

/// Refuses a state-changing request made by another site's page. A request with
/// neither header (curl, a script, a player) passes: only browsers send them, and
/// they always do on such requests.
fn same_site(access: &Access, headers: &HeaderMap, host: Option<&str>) -> Result<(), AppError> {
    let value = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if value("sec-fetch-site").is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site")) {
        return Err(AppError::Forbidden(
            "cross-site request refused: state-changing calls are accepted from freesky's own \
             pages, scripts and tools only (Sec-Fetch-Site: cross-site)"
                .into(),
        ));
    }
    if let Some(origin) = value("origin") {
        if !access.own_origin(origin.trim(), host) {
            return Err(AppError::Forbidden(format!(
                "cross-site request refused: state-changing calls are accepted from freesky's \
                 own pages, scripts and tools only (Origin `{}`)",
                origin.escape_debug()
            )));
        }
    }
    Ok(())
}

/// An admin call's caller: one with the bearer token when `server.admin_token` is
/// set, else one on loopback. A handler taking `Admin` runs only for them; the others
/// get 401 (no token given) or 403.
pub struct Admin(());

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, AppError> {
        admin_by(s, &parts.headers, peer(parts))
            .await
            .map(|()| Admin(()))
    }
}

/// `Admin`'s rule for a request with `headers` from `peer`, with the guess penalty: a
/// token given where one is set is a guess until it matches, and wrong ones from an
/// address make its next tries wait, as wrong viewer logins do (`Penalty`); an address
/// with too many is refused.
async fn admin_by(s: &AppState, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), AppError> {
    let guess = !s.config.server.admin_token.expose().is_empty() && bearer(headers).is_some();
    let penalised = peer.filter(|_| guess);
    // Held until a failure is recorded: a guess being checked counts for the next.
    let _turn = match penalised {
        Some(ip) => Some(s.accounts.penalty.wait(ip).await.ok_or_else(|| {
            AppError::Forbidden(
                "too many wrong admin tokens from this address: try again in a few minutes".into(),
            )
        })?),
        None => None,
    };
    let checked = admin_check(s, headers, peer);
    if let (Some(ip), Err(_)) = (penalised, &checked) {
        s.accounts.penalty.failure(ip);
    }
    checked
}

/// The admin rule: the bearer token when one is set, else a caller on loopback.
fn admin_check(s: &AppState, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), AppError> {
    let token = s.config.server.admin_token.expose();
    if !token.is_empty() {
        let given = bearer(headers).ok_or_else(|| {
            AppError::AdminUnauthorized(
                "admin calls need `Authorization: Bearer <admin_token>`".into(),
            )
        })?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            token.as_bytes(),
        )) {
            return Err(AppError::Forbidden("wrong admin token".into()));
        }
        return Ok(());
    }
    match peer {
        Some(ip) if ip.is_loopback() => Ok(()),
        _ => Err(AppError::Forbidden(
            "admin calls are accepted from loopback only when no admin_token is set".into(),
        )),
    }
}

/// Whether a request carries the admin token, where a route takes it in place of a
/// login (with `require_account`, where loopback without the token is not enough:
/// behind a reverse proxy on the same box every viewer is loopback): `Ok(false)` when
/// none is set or given; a given one is checked as `Admin` checks it, with its guess
/// penalty (a wrong one is a 403).
pub async fn carries_admin_token(
    s: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<bool, AppError> {
    if s.config.server.admin_token.expose().is_empty() || bearer(headers).is_none() {
        return Ok(false);
    }
    admin_by(s, headers, peer.map(|ip| ip.to_canonical()))
        .await
        .map(|()| true)
}

/// The bearer token a request carries (`Authorization: Bearer <token>`, the scheme
/// in any case), trimmed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    scheme_value(value, "Bearer")
}

/// The credentials of an `Authorization` value of `scheme` (matched in any case, as
/// HTTP says), trimmed.
pub fn scheme_value<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.trim_start().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// The address of the connection a request came on (`None` when the router is served
/// without one, as in a test calling it directly: never taken for loopback).
pub fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(extra: &str) -> Access {
        let text = format!("[server]\n{extra}\n");
        Access::new(&Config::parse(&text, "t.toml", &|_| None).expect("config loads"))
    }

    #[test]
    fn logged_paths_leave_out_logins() {
        for (path, shown) in [
            ("/alice/s3cret/1", "/…/…/1"),
            ("/live/alice/s3cret/1.ts", "/live/…/…/1.ts"),
            ("/movie/alice/s3cret/7.mp4", "/movie/…/…/7.mp4"),
            ("/series/alice/s3cret/5.mkv", "/series/…/…/5.mkv"),
            (
                "/timeshift/alice/s3cret/10/2026-12-06:20-00/1.ts",
                "/timeshift/…/…/10/2026-12-06:20-00/1.ts",
            ),
            ("/api/stream/bbc.ts", "/api/stream/bbc.ts"),
            ("/playlist.m3u", "/playlist.m3u"),
            ("/live/x", "/live/…"),
            ("/movie/bob/pw2", "/movie/…/…"),
            ("/alice/s3cret/1/", "/…/…/1/"),
        ] {
            assert_eq!(shown_path(path), shown, "{path}");
        }
    }

    #[test]
    fn host_names() {
        let a = access(
            "public_url = \"https://tv.example.org:8443/\"\nallowed_hosts = [\"box.lan\", \"*.home.arpa\"]",
        );
        for ok in [
            "127.0.0.1",
            "192.168.1.5",
            "[::1]",
            "[fe80::1]",
            "localhost",
            "LOCALHOST",
            "app.localhost",
            "tv.example.org",
            "box.lan",
            "Box.Lan.",
            "tv.home.arpa",
        ] {
            assert!(a.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "localhost.evil.example",
            "home.arpa",
            "box.lan.evil.example",
            "",
        ] {
            assert!(!a.allows(refused), "{refused}");
        }
        assert!(access("allowed_hosts = [\"*\"]").allows("anything.example"));
        for name in machine_names() {
            assert!(access("").allows(&name), "{name}");
        }
    }

    #[test]
    fn own_origins() {
        let a = access("public_url = \"https://tv.example.org/\"");
        let host = Some("127.0.0.1:8005");
        assert!(a.own_origin("http://127.0.0.1:8005", host));
        assert!(a.own_origin("https://tv.example.org", host));
        assert!(a.own_origin("http://box.lan", Some("box.lan")));
        assert!(a.own_origin("http://box.lan:80", Some("box.lan")));
        for foreign in [
            "http://127.0.0.1:8006",
            "http://evil.example",
            "http://tv.example.org",
            "null",
            "",
            "file:///",
        ] {
            assert!(!a.own_origin(foreign, host), "{foreign}");
        }
        assert!(!a.own_origin("http://127.0.0.1:8005", None));
    }

    #[test]
    fn media_routes() {
        for media in [
            "/api/stream/bbc.m3u8",
            "/api/timeshift/bbc.ts",
            "/proxy/a/b/c.ts",
            "/packaged/t/5.ts",
            "/live/u/p/5.ts",
            "/auto/v5",
            "/tuners/2/auto/v5",
        ] {
            assert!(is_media(media), "{media}");
        }
        for other in [
            "/",
            "/api/services/status",
            "/playlist.m3u",
            "/tuners/2/lineup.json",
            "/api/streams",
        ] {
            assert!(!is_media(other), "{other}");
        }
    }
}
