//! The OpenRPC document: fresh, identical to `rpc.discover` and to
//! `GET /openrpc.json`, complete, self-contained, accepted by the official
//! tooling, and good enough for `@open-rpc/generator` to make a typed client
//! that works.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::*;

const DEFAULT_URL: &str = "http://127.0.0.1:8080/";

fn committed() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openrpc.json");
    let text = std::fs::read_to_string(path).expect("openrpc.json is committed at the repo root");
    serde_json::from_str(&text).expect("openrpc.json is JSON")
}

fn generated() -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .arg("openrpc")
        .env("RUST_LOG", "warn")
        .env_remove("RPCGUARD_PUBLIC_URL")
        .output()
        .expect("run rpcguard openrpc");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn openrpc_json_is_not_stale() {
    assert!(
        committed() == generated(),
        "openrpc.json is stale: regenerate it with `cargo run -- openrpc > openrpc.json` and commit it"
    );
}

#[tokio::test]
async fn discover_answers_the_committed_document() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| {
        c.server.openrpc_info.server_url = DEFAULT_URL.to_owned()
    })
    .await
    .expect("app");
    let live = app
        .call(None, "rpc.discover", json!({}))
        .await
        .expect("rpc.discover");
    assert_eq!(live, committed());
    // Over WebSocket too.
    let ws = app.ws(None).await;
    assert_eq!(
        call(&ws, "rpc.discover", json!({})).await.expect("ws"),
        live
    );
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Every `format` keyword value in the schemas of `value`.
fn formats(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(f)) = map.get("format") {
                out.push(f.clone());
            }
            map.values().for_each(|v| formats(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| formats(v, out)),
        _ => {}
    }
}

/// The paths (JSON Pointers) of the schemas in `value` that say
/// `"type": "array"` but have no `items`: valid JSON Schema, but code
/// generators crash on them (`@open-rpc/generator` 1.22.3:
/// `getDefaultTitleForSchema`).
fn arrays_without_items(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let is_array = match map.get("type") {
                Some(Value::String(t)) => t == "array",
                Some(Value::Array(types)) => types.iter().any(|t| t == "array"),
                _ => false,
            };
            if is_array && !map.contains_key("items") {
                out.push(path.to_owned());
            }
            for (key, inner) in map {
                // Example values are data, not schemas.
                if key != "examples" {
                    arrays_without_items(inner, &format!("{path}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                arrays_without_items(inner, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn document_structure() {
    let doc = generated();
    assert_eq!(doc["openrpc"], "1.3.2");
    assert_eq!(doc["servers"][0]["url"], DEFAULT_URL);
    let methods = doc["methods"].as_array().expect("methods");
    let security: Vec<(String, Value)> = methods
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("name").to_owned(),
                m["x-security"].clone(),
            )
        })
        .collect();
    assert_eq!(
        security,
        vec![
            ("rpc.discover".to_owned(), json!({})),
            ("sign_up".to_owned(), json!({})),
            ("sign_in".to_owned(), json!({})),
            ("get_caller".to_owned(), json!({"Bearer": []})),
            ("refresh".to_owned(), json!({})),
            ("sign_out".to_owned(), json!({"Bearer": []})),
            ("change_password".to_owned(), json!({"Bearer": []})),
            ("authenticate".to_owned(), json!({})),
            ("require_scopes".to_owned(), json!({"Bearer": ["scope1"]})),
        ]
    );
    for method in methods {
        let name = &method["name"];
        assert_eq!(method["paramStructure"], "either", "{name}");
        assert!(
            method["result"]["schema"].is_object(),
            "{name} has a result"
        );
        assert!(
            !method["examples"].as_array().expect("examples").is_empty(),
            "{name} has an example"
        );
        let codes: BTreeSet<i64> = method["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["code"].as_i64().expect("code"))
            .collect();
        if method["x-security"] != json!({}) {
            assert!(codes.contains(&-32001), "{name} lists -32001");
        }
        if method["name"] == "require_scopes" {
            assert!(codes.contains(&-32099));
        }
        if method["name"] == "sign_in" {
            assert!(codes.contains(&-32002) && codes.contains(&-32005) && codes.contains(&-32602));
            assert!(
                codes.contains(&-32004),
                "sign_in lists -32004 Account disabled"
            );
        }
        if method["name"] == "refresh" || method["name"] == "authenticate" {
            assert!(codes.contains(&-32001), "{name} lists -32001");
        }
        if method["name"] == "change_password" {
            assert!(codes.contains(&-32002) && codes.contains(&-32005));
        }
        for error in method["errors"].as_array().expect("errors") {
            let data = match error["code"].as_i64() {
                Some(-32001) => json!({ "$ref": "#/components/schemas/UnauthenticatedData" }),
                Some(-32099) => json!({ "$ref": "#/components/schemas/PermissionErrorData" }),
                Some(-32005) => json!({ "$ref": "#/components/schemas/TooManyRequestsData" }),
                Some(-32602) => json!({ "$ref": "#/components/schemas/InvalidParamsData" }),
                _ => Value::Null,
            };
            assert_eq!(error["data"], data, "{name}: {error}");
        }
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["UnauthenticatedData"]["required"],
        json!(["reason"])
    );
    let reasons: Vec<&Value> = schemas["AuthFailure"]["oneOf"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| &r["const"])
        .collect();
    assert_eq!(
        reasons,
        [
            "missing_token",
            "invalid_token",
            "expired_token",
            "wrong_scheme",
            "revoked_token"
        ]
    );
    assert_eq!(
        schemas["PermissionErrorData"]["required"],
        json!(["missing_scopes"])
    );
    assert_eq!(
        schemas["TooManyRequestsData"]["properties"]["retry_after_s"]["type"],
        "integer"
    );
    assert_eq!(schemas["InvalidParamsData"]["type"], "string");
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} resolves"
        );
    }
    let mut found = Vec::new();
    formats(&doc, &mut found);
    assert!(found.is_empty(), "no non-standard formats: {found:?}");
    let mut untyped = Vec::new();
    arrays_without_items(&doc, "", &mut untyped);
    assert!(
        untyped.is_empty(),
        "array schemas without items: {untyped:?}"
    );
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        assert_eq!(
            schema["title"],
            json!(name),
            "components.schemas.{name} has its title"
        );
    }
    assert_eq!(doc["x-error-data-schema"], true);
    let bearer = &doc["components"]["x-securitySchemes"]["Bearer"];
    assert_eq!(
        (
            &bearer["type"],
            &bearer["in"],
            &bearer["name"],
            &bearer["bearerFormat"]
        ),
        (
            &json!("bearer"),
            &json!("header"),
            &json!("Authorization"),
            &json!("JWT")
        )
    );
    assert!(bearer["scopes"]["scope1"].is_string());
}

#[tokio::test]
async fn get_openrpc_json_answers_the_discover_document() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| {
        c.server.openrpc_info.server_url = DEFAULT_URL.to_owned()
    })
    .await
    .expect("app");
    let url = format!("{}openrpc.json", app.url);
    let response = app.http.get(&url).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-cache")
    );
    let etag = header(&response, "etag").expect("an ETag");
    let body = response.text().await.expect("body");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        committed()
    );

    // The very bytes rpc.discover answers (one serialization at start-up).
    let discover = app
        .http
        .post(&app.url)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}"#)
        .send()
        .await
        .expect("POST")
        .text()
        .await
        .expect("body");
    assert_eq!(
        discover,
        format!(r#"{{"jsonrpc":"2.0","id":1,"result":{body}}}"#)
    );

    // A client that has it asks again and gets 304, no body.
    let again = app
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), Some(etag.clone()));
    assert!(again.text().await.expect("body").is_empty());

    let head = app.http.head(&url).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(body.len().to_string())
    );
    assert!(head.text().await.expect("body").is_empty());

    let post = app.http.post(&url).send().await.expect("POST");
    assert_eq!(post.status(), 405);
    assert_eq!(header(&post, "allow").as_deref(), Some("GET, HEAD"));
    // The JSON-RPC path keeps refusing GET (`GET /` points to the docs).
    let rpc = app
        .http
        .get(format!("{}api/v1", app.url))
        .send()
        .await
        .expect("GET /api/v1");
    assert_eq!(rpc.status(), 405);
}

/// The npm project with the official OpenRPC tools, or `None` (after saying
/// why) when it is not installed; CI sets RPCGUARD_REQUIRE_NODE=1 to make
/// that a failure.
fn node_tools() -> Option<&'static Path> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/openrpc"
    ));
    if dir.join("node_modules").is_dir() {
        return Some(dir);
    }
    if std::env::var("RPCGUARD_REQUIRE_NODE").is_ok_and(|v| v == "1") {
        panic!(
            "RPCGUARD_REQUIRE_NODE=1 but {} has no node_modules",
            dir.display()
        );
    }
    eprintln!("SKIPPED (Node.js): run `npm ci --prefix tests/clients/openrpc` to use the official OpenRPC tools");
    None
}

async fn node(dir: &Path, script: &str, args: Vec<String>) {
    let script = dir.join(script);
    let out =
        tokio::task::spawn_blocking(move || Command::new("node").arg(script).args(args).output())
            .await
            .expect("join")
            .expect("node runs");
    assert!(
        out.status.success(),
        "node script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the official OpenRPC validator (`validate.mjs`) on a file or URL;
/// returns without checking when Node.js is absent (the caller is marked
/// ignored then).
pub async fn validate_with_node(file_or_url: &str) {
    let Some(dir) = node_tools() else { return };
    node(dir, "validate.mjs", vec![file_or_url.to_owned()]).await;
}

#[tokio::test]
#[cfg_attr(
    rpcguard_no_node,
    ignore = "Node.js: run `npm ci --prefix tests/clients/openrpc`"
)]
async fn official_validator_accepts_file_and_live_document() {
    let Some(dir) = node_tools() else { return };
    let app = TestApp::spawn().await;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/openrpc.json").to_owned();
    node(dir, "validate.mjs", vec![file, app.url.clone()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_node,
    ignore = "Node.js: run `npm ci --prefix tests/clients/openrpc`"
)]
async fn official_validator_accepts_the_document_with_an_external_issuer() {
    let Some(dir) = node_tools() else { return };
    let idp = crate::idp::FakeIdp::start().await;
    let oidc = rpcguard::security::oidc::OidcConfig::new(
        idp.issuer.clone(),
        crate::idp::AUDIENCE,
        rpcguard::security::oidc::JwksSource::parse(&idp.jwks_url),
    );
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| c.oidc = Some(oidc))
        .await
        .expect("sqlite");
    let live = app
        .call(None, "rpc.discover", json!({}))
        .await
        .expect("rpc.discover");
    assert!(live["components"]["x-securitySchemes"]["Bearer"]["x-issuers"].is_array());
    node(dir, "validate.mjs", vec![app.url.clone()]).await;
}

#[tokio::test]
#[cfg_attr(
    rpcguard_no_node,
    ignore = "Node.js: run `npm ci --prefix tests/clients/openrpc`"
)]
async fn open_rpc_client_js_over_http_and_websocket() {
    let Some(dir) = node_tools() else { return };
    let app = TestApp::spawn().await;
    node(dir, "flow.mjs", vec![app.url.clone()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_node,
    ignore = "Node.js: run `npm ci --prefix tests/clients/openrpc`"
)]
async fn generated_typescript_client_over_http_and_websocket() {
    let Some(dir) = node_tools() else { return };
    assert!(
        dir.join("node_modules/@open-rpc/generator").is_dir(),
        "@open-rpc/generator is missing from {}: run `npm ci --prefix tests/clients/openrpc` again",
        dir.display()
    );
    let app = TestApp::spawn().await;
    let work = tempfile::tempdir().expect("temp dir");
    let transcript = generated_client_flow(dir, &app, work.path()).await;
    assert!(
        transcript
            .lines()
            .any(|l| l.starts_with("OK ") && l.contains("generated client")),
        "{transcript}"
    );
}

/// Runs `generated-client.mjs` (generate the TypeScript client from the
/// live document, compile it, drive the flow) against `app`, granting the
/// scope the flow asks for when it asks (`GRANT <user> <scope>` on its
/// stdout, answered by a line on its stdin). Returns its stdout.
async fn generated_client_flow(dir: &Path, app: &TestApp, work: &Path) -> String {
    let mut command = Command::new("node");
    command
        .arg(dir.join("generated-client.mjs"))
        .arg(&app.url)
        .arg(work);
    let flow = node_flow(
        command,
        "the generated client's flow",
        |user, scope| async move {
            app.grant(&user, &scope).await;
        },
    )
    .await;
    assert!(
        flow.status.success(),
        "the generated client's flow failed ({}):\n{}\n{}",
        flow.status,
        flow.transcript,
        flow.errors
    );
    flow.transcript
}
