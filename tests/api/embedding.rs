//! A library user's own methods and security function: enforced by the
//! middleware and listed in `rpc.discover`, with no second list.

use std::sync::Arc;

use rpcguard::{
    AnySecurity, Api, ApiError, ApiKeySecurity, AuthFailure, CallContext, ErrorCode, Method,
    NoParams, RpcError, Scheme, SecurityFn, ServerError, SharedSecurity, BEARER,
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

/// The embedder's own error: declared with `Method::error_with_data`,
/// returned with `RpcError::custom`.
const QUOTA_EXCEEDED: ErrorCode = ErrorCode::new(4001);

/// The `data` of `QUOTA_EXCEEDED`.
#[derive(Debug, Serialize, JsonSchema)]
struct Quota {
    /// Exports allowed.
    limit: u32,
}

async fn export(_: NoParams, _: CallContext<()>) -> Result<bool, RpcError> {
    Err(RpcError::custom(
        QUOTA_EXCEEDED,
        "Quota exceeded",
        Quota { limit: 3 },
    ))
}

/// A handler whose `?` meets an I/O error: `-32603`, nothing of it sent.
async fn broken(_: NoParams, _: CallContext<()>) -> Result<bool, RpcError> {
    std::fs::read("/nonexistent/rpcguard/secret-path")?;
    Ok(true)
}

const API_KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
const OPS: Scheme = Scheme::api_key("Ops", "x-ops-key");

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
    let keys = ApiKeySecurity::new(&API_KEY).key(BOT_KEY, "bot", ["reports"]);
    // The ops key's function is a closure.
    let ops = SecurityFn::new(&OPS, |key, _| async move {
        match key.as_str() {
            OPS_KEY => Ok(OPS.caller("ops-bot", ["ops"])),
            _ => Err(AuthFailure::InvalidToken.into()),
        }
    });
    let security: SharedSecurity = Arc::new(AnySecurity::new(vec![
        bearer,
        Arc::new(keys),
        Arc::new(ops),
    ]));
    let mut api: Api<()> = Api::new();
    api.method(
        Method::new("report")
            .summary("Builds a report")
            .security(BEARER.require(["reports"]).or(API_KEY.require(["reports"]))),
        report,
    )
    .expect("declare report")
    .method(
        Method::new("greet")
            .summary("Greets")
            .public()
            .optional_caller(),
        greet,
    )
    .expect("declare greet")
    .method(
        Method::new("deploy")
            .summary("Ops only")
            .security(OPS.require(["ops"])),
        who,
    )
    .expect("declare deploy")
    .method(
        Method::new("whoami")
            .summary("Any signed-in user")
            .security(BEARER.require(())),
        who,
    )
    .expect("declare whoami")
    .method(
        Method::new("export")
            .summary("Always over quota")
            .public()
            .error_with_data::<Quota>(QUOTA_EXCEEDED, "Quota exceeded"),
        export,
    )
    .expect("declare export")
    .method(Method::new("broken").public(), broken)
    .expect("declare broken")
    .method(
        Method::new(format!("{}.whoami", "tenant")).security(OPS.require(())),
        who,
    )
    .expect("a name built at run time");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = rpcguard::serve(listener, api)
        .shared_security(security)
        .spawn()
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
    assert!(api.method(Method::new("rpc.evil").public(), greet).is_err());
    api.method(Method::new("greet").public(), greet)
        .expect("first");
    assert!(api.method(Method::new("greet").public(), greet).is_err());
}

#[test]
fn bearer_scheme_doc_is_complete() {
    let doc = BearerSecurity::scheme();
    assert_eq!(
        (doc.kind().as_str(), doc.header()),
        ("bearer", "Authorization")
    );
    assert!(!doc.description().is_empty());
}

/// The README's embedding program is `examples/embedding.rs`, verbatim, so
/// that what a newcomer copies is what CI compiles and runs.
#[test]
fn readme_embedding_program_is_the_compiled_example() {
    let readme = include_str!("../../README.md");
    for (path, example) in [
        (
            "examples/embedding.rs",
            include_str!("../../examples/embedding.rs"),
        ),
        (
            "crates/rpcguard/examples/api_key.rs",
            include_str!("../../crates/rpcguard/examples/api_key.rs"),
        ),
    ] {
        assert!(
            readme.contains(example.trim_end()),
            "README's \"Secure your own methods\" section must hold {path} verbatim: paste the file there"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_serves_notes_with_scopes_granted_from_code_and_the_cli() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().join("data");
    let example = ExampleProcess::start("embedding", |command| {
        command
            .arg(&data_dir)
            .env("BCRYPT_COST", "4")
            .env("ADDR", "127.0.0.1:0")
    });
    let url = example.url.clone();

    let anonymous = client(&url, None);
    assert_unauthenticated(
        call(&anonymous, "list_notes", json!({})).await,
        "missing_token",
    );
    let token = signed_in_through(&anonymous, "alice").await;
    let bearer = format!("Bearer {token}");
    let alice = client(&url, Some(("authorization", &bearer)));
    let note = json!({"text": "hello"});
    for method in ["list_notes", "add_note"] {
        let err = call(&alice, method, note.clone())
            .await
            .expect_err("no scope yet");
        assert_eq!(err.code(), -32099, "{method}");
    }
    // `join` grants notes:read from code; the next call has it.
    assert_eq!(
        call(&alice, "join", json!({})).await.expect("join"),
        json!(true)
    );
    assert_eq!(
        call(&alice, "list_notes", json!({})).await.expect("read"),
        json!([])
    );
    assert_eq!(
        call(&alice, "add_note", note.clone())
            .await
            .expect_err("no write")
            .code(),
        -32099
    );
    // notes:write from the command line, on the same data directory.
    let granted = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["user", "grant", "alice", "notes:write", "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("rpcguard user grant");
    assert!(granted.status.success(), "{granted:?}");
    let mut added = None;
    for _ in 0..50 {
        match call(&alice, "add_note", note.clone()).await {
            Ok(answer) => {
                added = Some(answer);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(added, Some(json!({"author": "alice", "text": "hello"})));
    assert_eq!(
        call(&alice, "list_notes", json!({})).await.expect("read"),
        json!([{"author": "alice", "text": "hello"}])
    );
    // The account methods are there; the demo method is not (opt-in).
    let doc = call(&anonymous, "rpc.discover", json!({}))
        .await
        .expect("discover");
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"sign_in") && names.contains(&"refresh"),
        "{names:?}"
    );
    assert!(!names.contains(&"require_scopes"), "{names:?}");
}

/// The framework-only example (`crates/rpcguard/examples/api_key.rs`): a
/// public method, scoped API-key methods, an admin method and an error
/// with typed data, through a jsonrpsee client and curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_example_serves_public_scoped_admin_and_typed_errors() {
    build_api_key_example();
    let example = ExampleProcess::start("api_key", |command| {
        command
            .env("ADDR", "127.0.0.1:0")
            .env("WRITER_KEY", "writer-key-1")
            .env("ADMIN_KEY", "admin-key-1")
            .env("RUST_LOG", "warn")
    });
    let url = example.url.clone();
    let anyone = client(&url, None);
    assert!(call(&anyone, "version", json!({}))
        .await
        .expect("public")
        .is_string());
    assert_unauthenticated(
        call(&anyone, "list_notes", json!({})).await,
        "missing_token",
    );
    let writer = client(&url, Some(("x-api-key", "writer-key-1")));
    let admin = client(&url, Some(("x-api-key", "admin-key-1")));
    assert_eq!(
        call_positional(&writer, "add_note", vec![json!("hi")])
            .await
            .expect("write"),
        json!({"author": "writer", "text": "hi"})
    );
    let err = call(&writer, "add_note", json!({"text": "x".repeat(281)}))
        .await
        .expect_err("too long");
    assert_eq!((err.code(), err.message()), (4001, "Note too long"));
    assert_eq!(err.data().map(|d| d.get()), Some(r#"{"max_chars":280}"#));
    // The API's default (notes:read) covers list_notes; the admin key lacks it.
    assert_eq!(
        call(&writer, "list_notes", json!({}))
            .await
            .expect("read")
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        call(&admin, "list_notes", json!({}))
            .await
            .expect_err("no read")
            .code(),
        -32099
    );
    assert_eq!(
        call(&writer, "clear_notes", json!({}))
            .await
            .expect_err("not admin")
            .code(),
        -32099
    );
    assert_eq!(
        call(&admin, "clear_notes", json!({})).await.expect("admin"),
        json!(1)
    );

    // A client that is not Rust: curl, for the document's typed error.
    let out = std::process::Command::new("curl")
        .args(["-s", &url, "-H", "content-type: application/json", "-d"])
        .arg(r#"{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}"#)
        .output()
        .expect("curl");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let methods = doc["result"]["methods"].as_array().expect("methods");
    let method = |name: &str| {
        methods
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(method("version")["x-security"], json!({}));
    assert_eq!(
        method("list_notes")["x-security"],
        json!({"ApiKey": ["notes:read"]})
    );
    assert_eq!(
        method("clear_notes")["x-security"],
        json!({"ApiKey": ["admin"]})
    );
    let errors = method("add_note")["errors"].clone();
    let too_long = errors
        .as_array()
        .expect("errors")
        .iter()
        .find(|e| e["code"] == 4001)
        .cloned()
        .expect("4001 listed");
    assert_eq!(
        too_long["data"],
        json!({"$ref": "#/components/schemas/TooLong"})
    );
    assert!(
        doc["result"]["components"]["schemas"]["TooLong"]["properties"]["max_chars"].is_object()
    );
}

async fn ok_true(_: NoParams, _: CallContext<()>) -> Result<bool, RpcError> {
    Ok(true)
}

#[tokio::test]
async fn a_method_without_security_stops_the_server_naming_it() {
    let mut api: Api<()> = Api::new();
    api.method(Method::new("open").public(), ok_true)
        .expect("public");
    api.method(Method::new("forgotten"), ok_true)
        .expect("declared");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = rpcguard::serve(listener, api)
        .spawn()
        .expect_err("no security, no default");
    assert!(
        matches!(&err, ServerError::Api(ApiError::NoSecurity(name)) if name == "forgotten"),
        "{err}"
    );
    assert!(err.to_string().contains("`forgotten`") && err.to_string().contains(".public()"));
}

#[tokio::test]
async fn the_default_security_merges_and_nests() {
    // A sub-API with its own default keeps it; one without gets the
    // parent's; nested names take the prefix.
    let mut notes: Api<()> = Api::new();
    notes.secured_by(API_KEY.require(["notes"]));
    notes.method(Method::new("list"), ok_true).expect("list");
    let mut admin: Api<()> = Api::new();
    admin.method(Method::new("purge"), ok_true).expect("purge");
    admin
        .method(Method::new("ping").public(), ok_true)
        .expect("ping");
    let mut api: Api<()> = Api::new();
    api.method(Method::new("hello"), ok_true).expect("hello");
    api.secured_by(API_KEY.require(["admin"]));
    api.nest("notes.", notes).expect("nest");
    api.merge(admin).expect("merge");
    let mut twice: Api<()> = Api::new();
    twice
        .method(Method::new("hello").public(), ok_true)
        .expect("hello");
    assert!(matches!(api.merge(twice), Err(ApiError::Duplicate(name)) if name == "hello"));
    assert!(matches!(
        Api::<()>::new().nest("rpc.", Api::new()),
        Err(ApiError::Prefix(_))
    ));

    let keys = ApiKeySecurity::new(&API_KEY)
        .key(BOT_KEY, "bot", ["notes"])
        .key(OPS_KEY, "root", ["admin"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = rpcguard::serve(listener, api)
        .security(keys)
        .spawn()
        .expect("spawn");
    let url = format!("http://{}/", server.local_addr());
    let bot = client(&url, Some(("x-api-key", BOT_KEY)));
    let root = client(&url, Some(("x-api-key", OPS_KEY)));
    assert_eq!(
        call(&bot, "notes.list", json!({})).await.expect("notes"),
        json!(true)
    );
    assert_eq!(
        call(&root, "notes.list", json!({}))
            .await
            .expect_err("not notes")
            .code(),
        -32099
    );
    for method in ["hello", "purge"] {
        assert_eq!(
            call(&root, method, json!({})).await.expect("admin"),
            json!(true)
        );
        assert_eq!(
            call(&bot, method, json!({}))
                .await
                .expect_err("not admin")
                .code(),
            -32099
        );
    }
    assert_eq!(
        call(&client(&url, None), "ping", json!({}))
            .await
            .expect("public"),
        json!(true)
    );
    let doc = call(&bot, "rpc.discover", json!({}))
        .await
        .expect("discover");
    let security: Vec<(String, serde_json::Value)> = doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_owned(),
                m["x-security"].clone(),
            )
        })
        .collect();
    assert_eq!(
        security,
        [
            ("rpc.discover".to_owned(), json!({})),
            ("hello".to_owned(), json!({"ApiKey": ["admin"]})),
            ("notes.list".to_owned(), json!({"ApiKey": ["notes"]})),
            ("purge".to_owned(), json!({"ApiKey": ["admin"]})),
            ("ping".to_owned(), json!({})),
        ]
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
            .security(BEARER.require(["reports"]).or(API_KEY.require(["reports"]))),
        report,
    )
    .expect("declare");
    let keys = ApiKeySecurity::new(&API_KEY).key(BOT_KEY, "bot", ["reports"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = rpcguard::serve(listener, api)
        .security(keys)
        .spawn()
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
        (QUOTA_EXCEEDED.get(), "Quota exceeded")
    );
    let data: serde_json::Value =
        serde_json::from_str(err.data().expect("data").get()).expect("json");
    assert_eq!(data, json!({"limit": 3}));
    // `?` on an I/O error: -32603, no detail sent.
    let err = call(&anyone, "broken", json!({}))
        .await
        .expect_err("internal");
    assert_eq!((err.code(), err.message()), (-32603, "Internal error"));
    assert!(err.data().is_none(), "{err:?}");

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
    // The declared error, with the schema of its data, as the contract's
    // own errors are listed.
    assert_eq!(
        export["errors"],
        json!([
            {"code": 4001, "message": "Quota exceeded", "data": {"$ref": "#/components/schemas/Quota"}},
            {"code": -32603, "message": "Internal error"}
        ])
    );
    assert_eq!(
        doc["components"]["schemas"]["Quota"]["properties"]["limit"]["description"],
        "Exports allowed."
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
    // Reserved codes cannot even be made (in a `const`, they do not compile).
    assert!(ErrorCode::try_new(-32001).is_none() && ErrorCode::try_new(-32768).is_none());
    let mine = ErrorCode::new(4001);
    assert!(refused(Method::new("c").public().errors([4001]), &mut api).contains("Method::error"));
    assert!(refused(Method::new("d").public().error(mine, " "), &mut api).contains("empty"));
    api.method(
        Method::new("e")
            .public()
            .errors([rpcguard::error::TOO_MANY_REQUESTS])
            .error(ErrorCode::new(-31999), "Fine"),
        export,
    )
    .expect("contract codes and codes outside the reserved range");
}
