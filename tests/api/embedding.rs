//! A library user's own methods and security function: enforced by the
//! middleware and listed in `rpc.discover`, with no second list.

use std::sync::Arc;

use rpcguard::security::{AnySecurity, ApiKeySecurity};
use rpcguard::{Api, CallContext, Method, MethodSecurity, NoParams, RpcError, SharedSecurity};
use rpcguard_accounts::BearerSecurity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::helpers::*;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Report {
    /// Who asked.
    requested_by: String,
    /// How many rows.
    rows: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    /// Rows wanted.
    rows: u32,
}

async fn report(params: ReportParams, ctx: CallContext<()>) -> Result<Report, RpcError> {
    Ok(Report {
        requested_by: ctx.caller()?.subject.clone(),
        rows: params.rows,
    })
}

async fn greet(_: NoParams, ctx: CallContext<()>) -> Result<String, RpcError> {
    Ok(match ctx.optional_caller() {
        Some(caller) => format!("hello {}", caller.subject),
        None => "hello stranger".to_owned(),
    })
}

/// An embedder's server: Bearer (from the reference app's store and key)
/// OR an API key.
async fn embedded_server(app: &TestApp) -> (rpcguard::RunningServer, String) {
    let reference = rpcguard_accounts::app::reference(&app.config)
        .await
        .expect("reference parts");
    let bearer: SharedSecurity = reference.security.clone();
    let keys =
        ApiKeySecurity::new("ApiKey", "x-api-key").key("bot-key-0123456789", "bot", ["reports"]);
    let security: SharedSecurity = Arc::new(AnySecurity::new(vec![bearer, Arc::new(keys)]));
    let mut api: Api<()> = Api::new();
    api.method(
        Method::new("report")
            .summary("Builds a report")
            .security(MethodSecurity::bearer(["reports"]).or("ApiKey", ["reports"])),
        report,
    )
    .expect("declare report")
    .method(
        Method::new("greet").summary("Greets").optional_caller(),
        greet,
    )
    .expect("declare greet");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = rpcguard::server::spawn(listener, api, Arc::new(()), security, Default::default())
        .expect("spawn");
    let url = format!("http://{}/", server.local_addr());
    (server, url)
}

fn client(url: &str, header: Option<(&'static str, &str)>) -> jsonrpsee::http_client::HttpClient {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some((name, value)) = header {
        headers.insert(name, value.parse().expect("header"));
    }
    jsonrpsee::http_client::HttpClientBuilder::default()
        .set_headers(headers)
        .build(url)
        .expect("client")
}

#[tokio::test]
async fn embedder_methods_are_secured_and_documented() {
    let app = TestApp::spawn().await;
    let token = app.signed_in("alice").await;
    let (_server, url) = embedded_server(&app).await;

    // API key with the scope: allowed.
    let bot = client(&url, Some(("x-api-key", "bot-key-0123456789")));
    let answer = call(&bot, "report", json!({"rows": 3}))
        .await
        .expect("api key");
    assert_eq!(answer, json!({"requested_by": "bot", "rows": 3}));
    // Wrong key: invalid.
    let wrong = client(&url, Some(("x-api-key", "nope")));
    assert_unauthenticated(
        call(&wrong, "report", json!({"rows": 3})).await,
        "invalid_token",
    );
    // Bearer without the scope: -32099 naming what is missing in each scheme held.
    let alice = client(&url, Some(("authorization", &format!("Bearer {token}"))));
    let err = call(&alice, "report", json!({"rows": 3}))
        .await
        .expect_err("denied");
    assert_eq!(err.code(), -32099);
    let name = rpcguard_accounts::Username::parse("alice").expect("valid");
    app.store
        .grant(
            &name,
            &[rpcguard_accounts::Scope::parse("reports").expect("scope")],
        )
        .await
        .expect("grant");
    assert_eq!(
        call_positional(&alice, "report", vec![json!(2)])
            .await
            .expect("granted")["requested_by"],
        "alice"
    );
    // Optional caller on a public method.
    assert_eq!(
        call(&alice, "greet", json!({})).await.expect("greet"),
        json!("hello alice")
    );
    assert_eq!(
        call(&client(&url, None), "greet", json!({}))
            .await
            .expect("greet"),
        json!("hello stranger")
    );
    assert_eq!(
        call(&wrong, "greet", json!({}))
            .await
            .expect("bad key is no key"),
        json!("hello stranger")
    );

    // The document lists them, with schemas and both schemes.
    let doc = call(&client(&url, None), "rpc.discover", json!({}))
        .await
        .expect("discover");
    let report = doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["name"] == "report")
        .expect("report listed");
    assert_eq!(
        report["x-security"],
        json!({"ApiKey": ["reports"], "Bearer": ["reports"]})
    );
    assert_eq!(report["params"][0]["name"], "rows");
    assert_eq!(
        report["result"]["schema"],
        json!({"$ref": "#/components/schemas/Report"})
    );
    assert!(doc["components"]["schemas"]["Report"].is_object());
    assert_eq!(
        doc["components"]["x-securitySchemes"]["ApiKey"]["type"],
        "apiKey"
    );
    assert_eq!(
        doc["components"]["x-securitySchemes"]["Bearer"]["type"],
        "bearer"
    );
}

#[test]
fn reserved_and_duplicate_names_are_refused() {
    let mut api: Api<()> = Api::new();
    assert!(api.method(Method::new("rpc.evil"), greet).is_err());
    api.method(Method::new("greet"), greet).expect("first");
    assert!(api.method(Method::new("greet"), greet).is_err());
}

#[test]
fn bearer_scheme_doc_is_complete() {
    let doc = BearerSecurity::scheme_doc();
    assert_eq!(
        (doc.kind.as_str(), doc.header.as_str()),
        ("bearer", "Authorization")
    );
}

/// The README's embedding program is `examples/embedding.rs`, verbatim, so
/// that what a newcomer copies is what CI compiles and runs.
#[test]
fn readme_embedding_program_is_the_compiled_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../../examples/embedding.rs");
    assert!(
        readme.contains(example.trim_end()),
        "README's \"Embedding\" section must hold examples/embedding.rs verbatim: paste the file there"
    );
}

/// The example, as built by `cargo test` (examples are built with the tests).
fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile.join("examples").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_runs_its_three_kinds_of_method() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().join("data");
    let mut child = std::process::Command::new(example_binary("embedding"))
        .arg(&data_dir)
        .env("ROBOT_KEY", "robot-secret")
        .env("BCRYPT_COST", "4")
        .env("ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run examples/embedding (built by cargo test)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on …")
        .to_owned();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);

    let anonymous = client(&url, None);
    assert!(call(&anonymous, "motd", json!({}))
        .await
        .expect("public")
        .is_string());
    call(
        &anonymous,
        "sign_up",
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await
    .expect("sign_up");
    let token = call(
        &anonymous,
        "sign_in",
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await
    .expect("sign_in")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let bearer = format!("Bearer {token}");
    let alice = client(&url, Some(("authorization", &bearer)));
    let report = json!({"month": "2026-11"});
    assert_eq!(
        call(&alice, "monthly_report", report.clone())
            .await
            .expect_err("no scope")
            .code(),
        -32099
    );
    let granted = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["user", "grant", "alice", "reports", "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("rpcguard user grant");
    assert!(granted.status.success(), "{granted:?}");
    let answer = call(&alice, "monthly_report", report)
        .await
        .expect("granted");
    assert_eq!(answer["requested_by"], "alice");
    let robot = client(&url, Some(("x-robot-key", "robot-secret")));
    assert_eq!(
        call(&robot, "ingest", json!({"readings": [1.5, 2.5]}))
            .await
            .expect("robot"),
        json!(2)
    );
    assert_unauthenticated(
        call(&alice, "ingest", json!({"readings": []})).await,
        "missing_token",
    );
}
