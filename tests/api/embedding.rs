//! A library user's own methods and security function: enforced by the
//! middleware and listed in `rpc.discover`, with no second list.

use std::sync::Arc;

use rpcguard::security::{AnySecurity, ApiKeySecurity};
use rpcguard::{
    Api, CallContext, Method, MethodSecurity, NoParams, RpcError, ServerError, SharedSecurity,
};
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

/// Who the handler saw as its caller, and in which scheme.
#[derive(Debug, Clone, Serialize, JsonSchema)]
struct Who {
    subject: String,
    scheme: String,
    scopes: Vec<String>,
}

async fn who(_: NoParams, ctx: CallContext<()>) -> Result<Who, RpcError> {
    let caller = ctx.caller()?;
    Ok(Who {
        subject: caller.subject.clone(),
        scheme: caller.scheme.clone(),
        scopes: caller.scopes.iter().cloned().collect(),
    })
}

/// The embedder's own error: declared with `Method::error`, returned with
/// `RpcError::custom`.
const QUOTA_EXCEEDED: i32 = 4001;

async fn export(_: NoParams, _: CallContext<()>) -> Result<bool, RpcError> {
    Err(RpcError::custom(
        QUOTA_EXCEEDED,
        "Quota exceeded",
        Some(json!({"limit": 3})),
    ))
}

/// A handler that tries to pass itself off as the security layer.
async fn impersonate(_: NoParams, _: CallContext<()>) -> Result<bool, RpcError> {
    Err(RpcError::custom(
        -32001,
        "Unauthenticated",
        Some(json!({"reason": "missing_token"})),
    ))
}

async fn greet(_: NoParams, ctx: CallContext<()>) -> Result<String, RpcError> {
    Ok(match ctx.optional_caller() {
        Some(caller) => format!("hello {}", caller.subject),
        None => "hello stranger".to_owned(),
    })
}

const OPS_KEY: &str = "ops-key-0123456789";
const BOT_KEY: &str = "bot-key-0123456789";

/// An embedder's server: Bearer (from the reference app's store and key)
/// OR an API key, and an ops key for the ops-only method.
async fn embedded_server(app: &TestApp) -> (rpcguard::RunningServer, String) {
    let reference = rpcguard_accounts::app::reference(&app.config)
        .await
        .expect("reference parts");
    let bearer: SharedSecurity = reference.security.clone();
    let keys = ApiKeySecurity::new("ApiKey", "x-api-key").key(BOT_KEY, "bot", ["reports"]);
    let ops = ApiKeySecurity::new("Ops", "x-ops-key").key(OPS_KEY, "ops-bot", ["ops"]);
    let security: SharedSecurity = Arc::new(AnySecurity::new(vec![
        bearer,
        Arc::new(keys),
        Arc::new(ops),
    ]));
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
    .expect("declare greet")
    .method(
        Method::new("deploy")
            .summary("Ops only")
            .security(MethodSecurity::scheme("Ops", ["ops"])),
        who,
    )
    .expect("declare deploy")
    .method(
        Method::new("whoami")
            .summary("Any signed-in user")
            .security(MethodSecurity::signed_in()),
        who,
    )
    .expect("declare whoami")
    .method(
        Method::new("export")
            .summary("Always over quota")
            .error(QUOTA_EXCEEDED, "Quota exceeded"),
        export,
    )
    .expect("declare export")
    .method(Method::new("impersonate"), impersonate)
    .expect("declare impersonate")
    .method(
        Method::new(format!("{}.whoami", "tenant")).security(MethodSecurity::authenticated("Ops")),
        who,
    )
    .expect("a name built at run time");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = rpcguard::server::spawn(listener, api, Arc::new(()), security, Default::default())
        .expect("spawn");
    let url = format!("http://{}/", server.local_addr());
    (server, url)
}

fn client(url: &str, header: Option<(&'static str, &str)>) -> jsonrpsee::http_client::HttpClient {
    clients(url, header.as_slice())
}

/// A client sending every one of `headers`.
fn clients(url: &str, headers: &[(&'static str, &str)]) -> jsonrpsee::http_client::HttpClient {
    let headers: reqwest::header::HeaderMap = headers
        .iter()
        .map(|(name, value)| {
            (
                reqwest::header::HeaderName::from_static(name),
                value.parse().expect("header"),
            )
        })
        .collect();
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
    let bot = client(&url, Some(("x-api-key", BOT_KEY)));
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
    app.grant("alice", "reports").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_runs_its_three_kinds_of_method() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().join("data");
    let example = ExampleProcess::start("embedding", |command| {
        command
            .arg(&data_dir)
            .env("ROBOT_KEY", "robot-secret")
            .env("BCRYPT_COST", "4")
            .env("ADDR", "127.0.0.1:0")
    });
    let url = example.url.clone();

    let anonymous = client(&url, None);
    assert!(call(&anonymous, "motd", json!({}))
        .await
        .expect("public")
        .is_string());
    let token = signed_in_through(&anonymous, "alice").await;
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
    // Alice is signed in, but `ingest` accepts robots only.
    assert_unauthenticated(
        call(&alice, "ingest", json!({"readings": []})).await,
        "wrong_scheme",
    );
}

#[tokio::test]
async fn two_credentials_give_the_one_identity_the_method_accepts() {
    let app = TestApp::spawn().await;
    let token = app.signed_in("bob").await;
    let (_server, url) = embedded_server(&app).await;
    let bearer = format!("Bearer {token}");
    let bob_and_ops = clients(&url, &[("authorization", &bearer), ("x-ops-key", OPS_KEY)]);

    // The ops-only method runs as the ops key, never as Bob with its scopes.
    let who = call(&bob_and_ops, "deploy", json!({}))
        .await
        .expect("ops key");
    assert_eq!(
        who,
        json!({"subject": "ops-bot", "scheme": "Ops", "scopes": ["ops"]})
    );
    // A Bearer method with the same two credentials runs as Bob, with his
    // scopes only.
    let who = call(&bob_and_ops, "whoami", json!({})).await.expect("bob");
    assert_eq!(
        who,
        json!({"subject": "bob", "scheme": "Bearer", "scopes": []})
    );

    // Bearer OR ApiKey: the first declared alternative that is met.
    let bob_and_bot = clients(&url, &[("authorization", &bearer), ("x-api-key", BOT_KEY)]);
    let report = call(&bob_and_bot, "report", json!({"rows": 1}))
        .await
        .expect("the bot's key meets it");
    // Neither identity meets it: -32099 with what Bob lacks; the ops key's
    // scopes are not lent to him.
    let err = call(&bob_and_ops, "report", json!({"rows": 1}))
        .await
        .expect_err("neither meets it");
    assert_eq!(err.code(), -32099, "{err:?}");
    let data: serde_json::Value =
        serde_json::from_str(err.data().expect("data").get()).expect("json");
    assert_eq!(data, json!({"missing_scopes": {"Bearer": ["reports"]}}));
    assert_eq!(report["requested_by"], "bot");
    app.grant("bob", "reports").await;
    let report = call(&bob_and_bot, "report", json!({"rows": 1}))
        .await
        .expect("both meet it");
    assert_eq!(report["requested_by"], "bob", "Bearer is declared first");
}

#[tokio::test]
async fn a_caller_of_another_scheme_is_told_wrong_scheme() {
    let app = TestApp::spawn().await;
    let (_server, url) = embedded_server(&app).await;
    let ops = client(&url, Some(("x-ops-key", OPS_KEY)));
    assert_unauthenticated(call(&ops, "whoami", json!({})).await, "wrong_scheme");
    assert_unauthenticated(
        call(&ops, "report", json!({"rows": 1})).await,
        "wrong_scheme",
    );
    // Nothing at all is still missing_token; a bad credential of an
    // accepted scheme is still invalid_token.
    assert_unauthenticated(
        call(&client(&url, None), "whoami", json!({})).await,
        "missing_token",
    );
    let bad_key = clients(&url, &[("x-api-key", "nope"), ("x-ops-key", OPS_KEY)]);
    assert_unauthenticated(
        call(&bad_key, "report", json!({"rows": 1})).await,
        "invalid_token",
    );
    // The method accepting the ops key still runs.
    assert_eq!(
        call(&bad_key, "deploy", json!({})).await.expect("ops")["subject"],
        "ops-bot"
    );
}

#[tokio::test]
async fn an_unknown_scheme_stops_the_server_at_start() {
    let mut api: Api<()> = Api::new();
    api.method(
        Method::new("report")
            .security(MethodSecurity::bearer(["reports"]).or("ApiKy", ["reports"])),
        report,
    )
    .expect("declare");
    let keys = ApiKeySecurity::new("ApiKey", "x-api-key").key(BOT_KEY, "bot", ["reports"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = rpcguard::server::spawn(
        listener,
        api,
        Arc::new(()),
        Arc::new(keys),
        Default::default(),
    )
    .expect_err("a scheme the security function does not provide");
    assert!(
        matches!(&err, ServerError::UnknownScheme { method, scheme, .. } if method == "report" && scheme == "Bearer"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`report`") && text.contains("`Bearer`") && text.contains("ApiKey"),
        "{text}"
    );
}

#[tokio::test]
async fn handlers_return_their_own_errors_and_the_document_lists_them() {
    let app = TestApp::spawn().await;
    let (_server, url) = embedded_server(&app).await;
    let anyone = client(&url, None);
    let err = call(&anyone, "export", json!({}))
        .await
        .expect_err("over quota");
    assert_eq!(
        (err.code(), err.message()),
        (QUOTA_EXCEEDED, "Quota exceeded")
    );
    let data: serde_json::Value =
        serde_json::from_str(err.data().expect("data").get()).expect("json");
    assert_eq!(data, json!({"limit": 3}));
    // A reserved code never reaches the caller as such.
    assert_error(
        call(&anyone, "impersonate", json!({})).await,
        -32603,
        "Internal error",
    );

    // A name built at run time is served like any other.
    let ops = client(&url, Some(("x-ops-key", OPS_KEY)));
    assert_eq!(
        call(&ops, "tenant.whoami", json!({}))
            .await
            .expect("runtime name")["subject"],
        "ops-bot"
    );

    let doc = call(&anyone, "rpc.discover", json!({}))
        .await
        .expect("discover");
    let methods = doc["methods"].as_array().expect("methods");
    let export = methods
        .iter()
        .find(|m| m["name"] == "export")
        .expect("export");
    assert_eq!(
        export["errors"],
        json!([
            {"code": QUOTA_EXCEEDED, "message": "Quota exceeded"},
            {"code": -32603, "message": "Internal error"}
        ])
    );
    for method in methods {
        for error in method["errors"].as_array().expect("errors") {
            assert_ne!(error["message"], "", "{}: {error}", method["name"]);
        }
    }
}

#[test]
fn declared_errors_are_checked() {
    let mut api: Api<()> = Api::new();
    let refused = |method: Method, api: &mut Api<()>| {
        api.method(method, export)
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    };
    assert!(refused(Method::new("a").error(-32001, "Mine"), &mut api).contains("reserved"));
    assert!(refused(Method::new("b").error(-32768, "Mine"), &mut api).contains("reserved"));
    assert!(refused(Method::new("c").errors([4001]), &mut api).contains("Method::error"));
    assert!(refused(Method::new("d").error(4001, " "), &mut api).contains("empty"));
    api.method(
        Method::new("e")
            .errors([rpcguard::error::TOO_MANY_REQUESTS])
            .error(-31999, "Fine"),
        export,
    )
    .expect("contract codes and codes outside the reserved range");
}
