//! `/api/openapi.json`: the document is valid OpenAPI (checked by the independent
//! `openapi-spec-validator` from PyPI, which scripts/test.sh installs), it lists every
//! route the router has (read from the `.route(...)` calls in src/http/) and nothing
//! the router lacks, and its operations describe their errors with `ErrorBody`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const METHODS: [&str; 8] = [
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

/// freesky's router on a fresh state (a demo service, HDHomeRun and virtual tuners on).
fn app(dir: &Path) -> axum::Router {
    let text = format!(
        "[server]\nstate_dir = '{}'\n\n[hdhomerun]\nmax_channels = 10\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
        dir.display()
    );
    let config = freesky::config::Config::parse(&text, "test.toml", &|k| std::env::var(k).ok())
        .unwrap_or_else(|e| panic!("test config does not load:\n{e}"));
    freesky::app(freesky::state(config).expect("state builds"))
}

/// Status, content type and (at most 64 KiB of) body of one request to the router.
async fn call(app: &axum::Router, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let req = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"))
        .uri(path)
        .header("host", "127.0.0.1:8005")
        .body(Body::empty())
        .expect("request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(20), app.clone().oneshot(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} hung"))
        .expect("infallible");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Streams never end: the first frames are enough to tell what answered.
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < 64 * 1024 {
        match tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    (status, ctype, bytes)
}

async fn document(app: &axum::Router) -> Value {
    let (status, ctype, body) = call(app, "get", "/api/openapi.json").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        ctype.starts_with("application/json"),
        "content type {ctype}"
    );
    serde_json::from_slice(&body).expect("the document is JSON")
}

/// Runs `python3 ARGS FILES`: whether it succeeded, and its stdout and stderr. Its
/// modules (openapi-spec-validator, which brings openapi-schema-validator) must be
/// installed: scripts/test.sh installs them; a missing one fails here.
fn python(args: &[&str], files: &[&Path]) -> (bool, String) {
    let out = Command::new("python3")
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): run scripts/test.sh, which installs it")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named"),
        "a Python module is not installed: run scripts/test.sh (it installs them with pip)\n{text}"
    );
    (out.status.success(), text)
}

/// Every `.route("PATH", get(...).patch(...))` in src/http/*.rs: (path, method) pairs.
fn routes_in_sources() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut found = BTreeSet::new();
    // src/http/*.rs and the files of its module folders (src/http/xtream/...).
    let mut files = Vec::new();
    let mut dirs = vec![dir];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("src/http") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(\"") {
            rest = &rest[at + ".route(\"".len()..];
            let end = rest.find('"').expect("closing quote of a route path");
            let path = rest[..end].to_string();
            // The method router: up to the `)` closing `.route(`.
            let mut depth = 1;
            let mut close = end;
            for (i, c) in rest[end..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = end + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let methods = &rest[end + 1..close];
            // `get(` at the start or `.patch(` chained; nested calls' own parens skipped.
            let mut n = 0;
            let mut depth = 0;
            let mut word = String::new();
            for c in methods.chars() {
                match c {
                    '(' => {
                        if depth == 0 && METHODS.contains(&word.as_str()) {
                            found.insert((path.clone(), word.clone()));
                            n += 1;
                        }
                        depth += 1;
                        word.clear();
                    }
                    ')' => {
                        depth -= 1;
                        word.clear();
                    }
                    c if c.is_ascii_alphanumeric() || c == '_' => word.push(c),
                    _ => word.clear(),
                }
            }
            assert!(
                n > 0,
                "{}: no method found for route {path}: {methods}",
                file.display()
            );
            rest = &rest[close..];
        }
    }
    found
}

/// `path` with every `{param}` filled with a harmless value.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closing brace") + open;
        let value = match &rest[open + 1..close] {
            "n" => "1",
            "channel" => "v99999",
            "file" => "no-such-channel.m3u8",
            _ => "no-such-thing",
        };
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn the_document_is_valid_openapi() {
    let dir = tempfile::tempdir().expect("temp dir");
    let doc = document(&app(dir.path())).await;
    assert_eq!(doc["info"]["title"], "freesky");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");

    let (ok, text) = python(&["-m", "openapi_spec_validator"], &[&file]);
    assert!(ok, "the document is not valid OpenAPI:\n{text}");
    assert!(text.contains("OK"), "unexpected validator output: {text}");
}

/// The validator above must be able to fail: a broken document is refused.
#[tokio::test]
async fn the_validator_refuses_a_broken_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut doc = document(&app(dir.path())).await;
    // A path parameter that the path does not have is invalid OpenAPI.
    doc["paths"]["/health"]["get"]["parameters"] = serde_json::json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let file = dir.path().join("broken.json");
    std::fs::write(&file, serde_json::to_vec(&doc).expect("json")).expect("write");
    let (ok, text) = python(&["-m", "openapi_spec_validator"], &[&file]);
    assert!(!ok, "the validator accepted a broken document: {text}");
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_path_is_routed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = app(dir.path());
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");

    let routes = routes_in_sources();
    // The parser must find the routes we know of, or the check below proves nothing.
    for known in [
        ("/api/channels/{id}", "get"),
        ("/api/channels/{id}", "patch"),
        ("/playlist.m3u8", "get"),
        ("/tuners/{n}/auto/{channel}", "get"),
        ("/api/services/{name}/priority", "put"),
        ("/api/openapi.json", "get"),
    ] {
        assert!(
            routes.contains(&(known.0.to_string(), known.1.to_string())),
            "route parser missed {known:?}: {routes:?}"
        );
    }
    let missing: Vec<_> = routes
        .iter()
        .filter(|(path, method)| paths.get(path).and_then(|p| p.get(method)).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "routes not in the document: {missing:?}"
    );

    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                documented.push((path.clone(), method.to_string()));
            }
        }
    }
    assert!(documented.len() >= routes.len());
    for (path, method) in documented {
        let uri = concrete(&path);
        let (status, _, body) = call(&app, &method, &uri).await;
        let text = String::from_utf8_lossy(&body);
        let fallback = status == 404
            && serde_json::from_slice::<Value>(&body)
                .is_ok_and(|v| v["error"] == "no such endpoint");
        assert!(
            !fallback && status != 405,
            "{method} {path} ({uri}) is documented but not routed: {status} {text}"
        );
    }
    // The probe can tell: an undocumented path does hit the fallback.
    let (status, _, body) = call(&app, "get", "/api/no-such-route").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["error"],
        "no such endpoint"
    );
}

/// Does `response` (an operation's response object) carry `ErrorBody` as JSON?
fn is_error_body(response: &Value) -> bool {
    response["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorBody"
}

#[tokio::test]
async fn operations_describe_their_errors_with_error_body() {
    let dir = tempfile::tempdir().expect("temp dir");
    let doc = document(&app(dir.path())).await;
    let error_body = &doc["components"]["schemas"]["ErrorBody"];
    assert!(
        error_body["properties"]["error"].is_object()
            && error_body["properties"]["detail"].is_object(),
        "ErrorBody: {error_body:#}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["admin"]["scheme"]
            .as_str()
            .map(str::to_lowercase)
            .as_deref(),
        Some("bearer")
    );
    // Operations that cannot fail: nothing they do returns an error.
    let infallible = [
        ("/health", "get"),
        ("/metrics", "get"),
        ("/api/openapi.json", "get"),
        ("/api/services/status", "get"),
        ("/", "get"),
        ("/dashboard.css", "get"),
        ("/dashboard.js", "get"),
        ("/assets/hls.light.min.js", "get"),
    ];
    let mut admin = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let responses = op["responses"].as_object().expect("responses");
            for (code, r) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    // 416 has no body (RFC 9110: Content-Range says why).
                    assert!(
                        code == "416" || is_error_body(r),
                        "{method} {path}: {code} does not use ErrorBody: {r}"
                    );
                }
            }
            let errors = responses
                .iter()
                .filter(|(code, r)| {
                    (code.starts_with('4') || code.starts_with('5')) && is_error_body(r)
                })
                .count();
            if !infallible.contains(&(path.as_str(), method)) {
                assert!(errors > 0, "{method} {path} documents no error");
            }
            let is_admin = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("admin").is_some()));
            if is_admin {
                admin += 1;
                for code in ["401", "403"] {
                    assert!(
                        responses.get(code).is_some_and(is_error_body),
                        "admin {method} {path} lacks {code} ErrorBody"
                    );
                }
            }
        }
    }
    // enable, disable, priority, PATCH channel, guide refresh, config reload.
    assert!(admin >= 6, "only {admin} admin operations marked");
    for (path, method) in [
        ("/api/services/{name}/priority", "put"),
        ("/api/channels/{id}", "patch"),
        ("/api/guide/refresh", "post"),
    ] {
        assert!(
            doc["paths"][path][method]["security"][0]["admin"].is_array(),
            "{method} {path} is not marked admin"
        );
    }
}

/// Every status a server with `require_account`, an admin token and a viewer account
/// answers is one its document lists for that operation: each operation called with
/// no login, a wrong admin token, the right one, a viewer's login and a wrong one, and
/// (with a body) an oversized and a malformed body.
#[tokio::test]
async fn every_status_a_locked_down_server_answers_is_documented() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "[server]\nstate_dir = '{}'\nadmin_token = \"the-admin-token-1\"\nrequire_account = true\n\n\
         [hdhomerun]\nmax_channels = 10\naccount = \"vera\"\n\n\
         [[users]]\nname = \"vera\"\npassword = \"vera-pass\"\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
        dir.path().display()
    );
    let config = freesky::config::Config::parse(&text, "test.toml", &|k| std::env::var(k).ok())
        .unwrap_or_else(|e| panic!("test config does not load:\n{e}"));
    let app = freesky::app(freesky::state(config).expect("state builds"));
    let doc = document_as(&app, "Bearer the-admin-token-1").await;
    let basic = |login: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(login)
        )
    };
    let (vera, wrong_login) = (basic("vera:vera-pass"), basic("vera:nope"));
    let tries: [(&str, Option<&str>); 5] = [
        ("no login", None),
        ("a wrong admin token", Some("Bearer wrong-token")),
        ("the admin token", Some("Bearer the-admin-token-1")),
        ("a viewer's login", Some(&vera)),
        ("a wrong viewer login", Some(&wrong_login)),
    ];
    let oversized = vec![b' '; 17 << 20];
    let mut undocumented = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let uri = concrete(path);
            let mut calls: Vec<(&str, Option<&str>, Vec<u8>)> = tries
                .iter()
                .map(|(why, auth)| (*why, *auth, Vec::new()))
                .collect();
            if op.get("requestBody").is_some() {
                let admin = Some("Bearer the-admin-token-1");
                calls.push(("an oversized body", admin, oversized.clone()));
                calls.push(("a malformed body", admin, b"{".to_vec()));
            }
            for (why, auth, body) in calls {
                let status = call_with(&app, method, &uri, auth, body).await;
                seen.insert(status);
                if op["responses"].get(status.to_string()).is_none() {
                    undocumented.push(format!("{method} {path} with {why}: {status}"));
                }
            }
        }
    }
    // The calls reached what they test: logins refused and a body refused as too large.
    for status in [401, 403, 413] {
        assert!(seen.contains(&status), "no {status} seen: {seen:?}");
    }
    assert!(
        undocumented.is_empty(),
        "answers the document does not list:\n{}",
        undocumented.join("\n")
    );
}

/// `/api/openapi.json` asked with `authorization`.
async fn document_as(app: &axum::Router, authorization: &str) -> Value {
    let req = Request::builder()
        .uri("/api/openapi.json")
        .header("host", "127.0.0.1:8005")
        .header("authorization", authorization)
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("the document is JSON")
}

/// The status of one request with `authorization` and `body` (JSON).
async fn call_with(
    app: &axum::Router,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> u16 {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"))
        .uri(path)
        .header("host", "127.0.0.1:8005")
        .header("content-type", "application/json");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let req = req.body(Body::from(body)).expect("request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(20), app.clone().oneshot(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} hung"))
        .expect("infallible");
    resp.status().as_u16()
}

/// What each documented `GET` answers with 200 as JSON on a fresh server is what its
/// documented schema describes: every answer is checked against the document by
/// `openapi-schema-validator` (PyPI; installed with openapi-spec-validator by
/// scripts/test.sh), so a schema that refuses real answers (a field documented as
/// always there that is not) fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_match_their_documented_schemas() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = app(dir.path());
    let doc = document(&app).await;
    let mut cases = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let schema = &item["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        if schema.is_null() {
            continue;
        }
        let (status, ctype, body) = call(&app, "get", &concrete(path)).await;
        if status != 200 || !ctype.starts_with("application/json") {
            continue;
        }
        let instance: Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e})"));
        cases.push(serde_json::json!({"path": path, "schema": schema, "instance": instance}));
    }
    assert!(cases.len() >= 10, "only {} answers to check", cases.len());
    let doc_file = dir.path().join("openapi.json");
    let cases_file = dir.path().join("cases.json");
    std::fs::write(&doc_file, serde_json::to_vec(&doc).expect("json")).expect("write");
    std::fs::write(&cases_file, serde_json::to_vec(&cases).expect("json")).expect("write");
    let script = r#"
import json, sys
from openapi_schema_validator import OAS31Validator
doc = json.load(open(sys.argv[1]))
cases = json.load(open(sys.argv[2]))
bad = []
for c in cases:
    root = dict(c["schema"])
    root["components"] = doc["components"]
    errors = list(OAS31Validator(root).iter_errors(c["instance"]))
    if errors:
        bad.append(c["path"] + ": " + errors[0].message[:400])
print("\n".join(bad))
print("CHECKED", len(cases))
sys.exit(1 if bad else 0)
"#;
    let (ok, text) = python(&["-c", script], &[&doc_file, &cases_file]);
    assert!(ok, "answers the document does not describe:\n{text}");
    assert!(text.contains(&format!("CHECKED {}", cases.len())), "{text}");
}
