//! Operator policy (`--policy FILE`): re-scoped methods, any-of scope
//! sets, disabled methods, rate limits per caller and per address, the
//! document under a policy, `--discover caller`, and reload on SIGHUP.

use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use serde_json::{json, Value};

use crate::both_stores;
use crate::helpers::*;
use rpcguard::policy::Policy;

/// Every key of the format, on the reference methods.
const EVERY_KEY: &str = r#"
# get_caller needs `reader` now (declared: any signed-in caller).
[methods.get_caller]
scopes = ["reader"]

# Either admin, or scope1 and scope2 together (declared: scope1).
[methods.require_scopes]
scheme = "Bearer"
any_of = [["admin"], ["scope1", "scope2"]]

[methods.authenticate]
enabled = false

[methods."rpc.discover"]
scopes = []

[limits]
per_caller = "600/min"
per_ip = "1200/min"
max_keys = 1000

[limits.methods.sign_up]
per_ip = "40/min"

[limits.methods.refresh]
per_ip = "3/min"

# A secured method's own per-caller budget (refresh, public, can have none).
[limits.methods.require_scopes]
per_caller = "600/min"
"#;

fn policy(text: &str) -> Policy {
    Policy::parse(text).expect("valid policy")
}

fn method<'d>(doc: &'d Value, name: &str) -> Option<&'d Value> {
    doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["name"] == name)
}

fn names(doc: &Value) -> Vec<String> {
    doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect()
}

fn missing(err: &jsonrpsee::types::ErrorObjectOwned) -> Value {
    serde_json::from_str::<Value>(err.data().expect("data").get()).expect("json")["missing_scopes"]
        .clone()
}

both_stores! {
    async fn every_key_of_the_policy_file(app) config(c) {
        c.server.policy = policy(EVERY_KEY);
    } {
        let token = app.signed_in("alice").await;
        // scopes = ["reader"] replaces "any signed-in caller".
        let denied = app.call(Some(&token), "get_caller", json!({})).await.expect_err("needs reader");
        assert_eq!(denied.code(), -32099);
        assert_eq!(missing(&denied), json!({"Bearer": ["reader"]}));
        app.grant("alice", "reader").await;
        let me = app.call(Some(&token), "get_caller", json!({})).await.expect("reader");
        assert_eq!(me["username"], "alice");

        // any_of: partial scopes of each set are not enough; either set is.
        app.grant("alice", "scope1").await;
        let partial = app.call(Some(&token), "require_scopes", json!({})).await.expect_err("scope1 alone");
        assert_eq!(partial.code(), -32099);
        app.grant("alice", "scope2").await;
        assert_eq!(app.call(Some(&token), "require_scopes", json!({})).await.expect("scope1+2"), json!(true));
        let bob = app.signed_in("bob").await;
        app.grant("bob", "admin").await;
        assert_eq!(app.call(Some(&bob), "require_scopes", json!({})).await.expect("admin"), json!(true));
        let carol = app.signed_in("carol").await;
        app.grant("carol", "scope2").await;
        let err = app.call(Some(&carol), "require_scopes", json!({})).await.expect_err("scope2 alone");
        assert_eq!(err.code(), -32099);

        // enabled = false: -32601, as for a method that does not exist.
        let gone = app.call(None, "authenticate", json!({"access_token": token})).await;
        assert_error(gone, -32601, "Method not found");

        // rpc.discover needs a signed-in caller; the document shows the
        // requirements in force and leaves the disabled method out.
        assert_unauthenticated(app.call(None, "rpc.discover", json!({})).await, "missing_token");
        let doc = app.call(Some(&carol), "rpc.discover", json!({})).await.expect("document");
        assert!(method(&doc, "authenticate").is_none(), "{:?}", names(&doc));
        assert_eq!(method(&doc, "get_caller").expect("listed")["x-security"], json!({"Bearer": ["reader"]}));
        assert_eq!(
            method(&doc, "require_scopes").expect("listed")["x-security"],
            json!([{"Bearer": ["admin"]}, {"Bearer": ["scope1", "scope2"]}])
        );
        assert_eq!(method(&doc, "rpc.discover").expect("listed")["x-security"], json!({"Bearer": []}));
        let scopes = &doc["components"]["x-securitySchemes"]["Bearer"]["scopes"];
        assert!(scopes.get("reader").is_some() && scopes.get("admin").is_some(), "{scopes}");
        assert!(scopes.get("scope2").is_some(), "{scopes}");
        // GET /openrpc.json is the same document.
        let served: Value = app.http.get(format!("{}openrpc.json", app.url)).send().await.expect("get")
            .json().await.expect("json");
        assert_eq!(served, doc);

        // A method's own budget: refresh allows 3 a minute per address.
        for _ in 0..3 {
            let answer = app.call(None, "refresh", json!({"refresh_token": "x"})).await.expect_err("bad token");
            assert_eq!(answer.code(), -32001, "{answer:?}");
        }
        let limited = app.call(None, "refresh", json!({"refresh_token": "x"})).await.expect_err("limited");
        assert_too_many(&limited);
        // ... and only refresh's: sign_up draws from its own.
        app.sign_up("dave", PASSWORD).await.expect("sign_up has its own budget");
    }

    async fn per_caller_budget_through_batches_and_websocket_sessions(app) config(c) {
        c.server.policy = policy("[limits]\nper_caller = \"5/min\"\n");
    } {
        let token = app.signed_in("alice").await;
        // One batch of 8 gets the same 5 as 8 single calls would.
        let batch: Vec<Value> = (1..=8)
            .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "get_caller"}))
            .collect();
        let (status, body) = app.post_raw(Value::Array(batch).to_string(), bearer_headers(Some(&token))).await;
        assert_eq!(status, 200);
        let answers = body.as_array().expect("batch answer");
        let ok = answers.iter().filter(|a| a.get("result").is_some()).count();
        let limited: Vec<&Value> = answers.iter().filter(|a| a["error"]["code"] == -32005).collect();
        assert_eq!((ok, limited.len()), (5, 3), "{body}");
        assert!(limited[0]["error"]["data"]["retry_after_s"].as_u64().is_some_and(|s| s >= 1), "{body}");
        // Another session of the same caller has no budget left either.
        let ws = app.ws(Some(&token)).await;
        let err = call(&ws, "get_caller", json!({})).await.expect_err("spent");
        assert_too_many(&err);
        let ws2 = app.ws(Some(&token)).await;
        assert_too_many(&call(&ws2, "get_caller", json!({})).await.expect_err("spent"));
        // A second sign-in is the same subject: the same budget.
        let again = app.sign_in("alice", PASSWORD).await.expect("sign_in is public")["access_token"]
            .as_str().expect("token").to_owned();
        assert_too_many(&app.call(Some(&again), "get_caller", json!({})).await.expect_err("same subject"));
        // Another caller has its own.
        let bob = app.signed_in("bob").await;
        app.call(Some(&bob), "get_caller", json!({})).await.expect("bob's own budget");
        // Calls refused for scopes draw from the caller's budget too.
        let carol = app.signed_in("carol").await;
        for _ in 0..5 {
            assert_eq!(app.call(Some(&carol), "require_scopes", json!({})).await.expect_err("no scope1").code(), -32099);
        }
        assert_too_many(&app.call(Some(&carol), "get_caller", json!({})).await.expect_err("spent on refusals"));
    }
}

pub fn assert_too_many(err: &jsonrpsee::types::ErrorObjectOwned) {
    assert_eq!(err.code(), -32005, "{err:?}");
    let data: Value = serde_json::from_str(err.data().expect("data").get()).expect("json");
    assert!(
        data["retry_after_s"].as_u64().is_some_and(|s| s >= 1),
        "{data}"
    );
}

both_stores! {
    async fn per_ip_budget_for_public_methods_and_refused_calls(app) config(c) {
        c.server.policy = policy("[limits]\nper_ip = \"4/min\"\nper_caller = \"100/min\"\n");
    } {
    let token = app.signed_in("alice").await; // sign_up + sign_in: 2 of 4
                                              // A call refused -32001 draws from the address, not from a caller.
    assert_unauthenticated(
        app.call(Some("not-a-token"), "get_caller", json!({})).await,
        "invalid_token",
    );
    app.call(None, "rpc.discover", json!({}))
        .await
        .expect("4th");
    assert_too_many(
        &app.call(None, "rpc.discover", json!({}))
            .await
            .expect_err("5th"),
    );
    // Secured calls of a signed-in caller draw from the caller's budget.
    app.call(Some(&token), "get_caller", json!({}))
        .await
        .expect("per caller");
    }
}

both_stores! {
    async fn discover_caller_shows_what_each_caller_may_call(app) config(c) {
        c.server.discover = rpcguard::policy::Discover::Caller;
    } {
    let anonymous = app
        .call(None, "rpc.discover", json!({}))
        .await
        .expect("public");
    let public = names(&anonymous);
    assert!(public.contains(&"sign_in".to_owned()), "{public:?}");
    assert!(!public.contains(&"get_caller".to_owned()), "{public:?}");
    assert!(!public.contains(&"require_scopes".to_owned()), "{public:?}");
    // No scope is named to an anonymous caller.
    assert_eq!(
        anonymous["components"]["x-securitySchemes"]["Bearer"]["scopes"],
        json!({})
    );
    // A bad token is no token.
    assert_eq!(
        app.call(Some("not-a-token"), "rpc.discover", json!({}))
            .await
            .expect("public"),
        anonymous
    );
    let plain = app.signed_in("alice").await;
    let signed_in = names(
        &app.call(Some(&plain), "rpc.discover", json!({}))
            .await
            .expect("doc"),
    );
    assert!(
        signed_in.contains(&"get_caller".to_owned()),
        "{signed_in:?}"
    );
    assert!(
        !signed_in.contains(&"require_scopes".to_owned()),
        "{signed_in:?}"
    );
    let scoped = app.signed_in("bob").await;
    app.grant("bob", "scope1").await;
    let full = app
        .call(Some(&scoped), "rpc.discover", json!({}))
        .await
        .expect("doc");
    assert!(names(&full).contains(&"require_scopes".to_owned()));
    assert_eq!(names(&full).len(), signed_in.len() + 1);
    // Over WebSocket too, and GET /openrpc.json shows the anonymous view.
    let ws = app.ws(Some(&plain)).await;
    assert_eq!(
        names(&call(&ws, "rpc.discover", json!({})).await.expect("doc")),
        signed_in
    );
    let served: Value = app
        .http
        .get(format!("{}openrpc.json", app.url))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(served, anonymous);
    }
}

#[tokio::test]
async fn a_running_server_takes_a_new_policy_and_refuses_a_bad_one() {
    let app = TestApp::spawn().await;
    let token = app.signed_in("alice").await;
    let handle = app.policy();
    app.call(Some(&token), "get_caller", json!({}))
        .await
        .expect("declared: any signed-in caller");
    handle
        .replace(policy("[methods.get_caller]\nscopes = [\"reader\"]\n"))
        .expect("valid");
    let err = app
        .call(Some(&token), "get_caller", json!({}))
        .await
        .expect_err("now needs reader");
    assert_eq!(err.code(), -32099);
    let bad = handle
        .replace(policy("[methods.get_callr]\nscopes = []\n"))
        .expect_err("no such method");
    assert_eq!(bad.line, Some(1), "{bad}");
    assert!(bad.message.contains("get_callr"), "{bad}");
    // The policy in force stayed.
    assert_eq!(
        app.call(Some(&token), "get_caller", json!({}))
            .await
            .expect_err("still reader")
            .code(),
        -32099
    );
    assert!(handle.current().methods.contains_key("get_caller"));
}

#[test]
fn a_bad_policy_file_stops_the_server_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("policy.toml");
    for (text, line, key) in [
        (
            "[methods.get_caller]\nscopes = []\n\n[methods.no_such_method]\nenabled = false\n",
            ":4:",
            "no_such_method",
        ),
        (
            "[limits]\nper_caller = \"600/minute-ish\"\n",
            ":2:",
            "per_caller",
        ),
        ("[methods.get_caller]\nscopez = []\n", ":2:", "scopez"),
        (
            "[methods.sign_in]\nscheme = \"Basic\"\nscopes = []\n",
            ":1:",
            "Basic",
        ),
    ] {
        std::fs::write(&file, text).expect("write");
        let data = dir.path().join("data");
        let stderr = serve_refused(
            &[
                "--policy",
                file.to_str().expect("utf-8"),
                "--data-dir",
                data.to_str().expect("utf-8"),
            ],
            &[],
        );
        assert!(stderr.contains("policy.toml"), "{stderr}");
        assert!(stderr.contains(line), "{line} in {stderr}");
        assert!(stderr.contains(key), "{key} in {stderr}");
    }
}

/// `kill -HUP` while clients call: every answer is the old policy's or the
/// new one's (never an error of the transport, never a mix), a client that
/// saw the new policy never sees the old again, and a bad file is refused
/// with the old policy kept.
#[test]
fn sighup_reloads_the_policy_file_while_calls_are_in_flight() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, "[methods.get_caller]\nscopes = []\n").expect("write");
    let data = dir.path().join("data");
    let server = ServerProcess::start(
        &[
            "--policy",
            file.to_str().expect("utf-8"),
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        &[],
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = server.client(None);
        let token = signed_in_through(&client, "alice").await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut callers = Vec::new();
        for _ in 0..4 {
            let client = server.client(Some(&token));
            let stop = stop.clone();
            callers.push(tokio::spawn(async move {
                let (mut old, mut new) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client
                        .request::<Value, _>("get_caller", jsonrpsee::rpc_params![])
                        .await
                    {
                        Ok(user) => {
                            assert_eq!(user["username"], "alice");
                            assert_eq!(new, 0, "the old policy again after the new one");
                            old += 1;
                        }
                        Err(jsonrpsee::core::ClientError::Call(err)) if err.code() == -32099 => {
                            new += 1
                        }
                        Err(other) => panic!("a call failed during the reload: {other:?}"),
                    }
                }
                (old, new)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&file, "[methods.get_caller]\nscopes = [\"reader\"]\n").expect("write");
        hangup(&server);
        wait_for_log(&server, "rpcguard policy reloaded", 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for caller in callers {
            let (old, new) = caller.await.expect("caller");
            assert!(old > 0 && new > 0, "old {old}, new {new}");
        }
        // A bad file: refused, logged, the policy in force stays.
        std::fs::write(
            &file,
            "[methods.get_caller]\nscopes = [\"reader\"]\nbogus = 1\n",
        )
        .expect("write");
        hangup(&server);
        wait_for_log(&server, "rpcguard policy reload refused", 1);
        assert!(server.log().contains("bogus"), "{}", server.log());
        let client = server.client(Some(&token));
        let err = call(&client, "get_caller", json!({}))
            .await
            .expect_err("reader still needed");
        assert_eq!(err.code(), -32099);
        let doc = call(&client, "rpc.discover", json!({}))
            .await
            .expect("document");
        assert_eq!(
            method(&doc, "get_caller").expect("listed")["x-security"],
            json!({"Bearer": ["reader"]})
        );
    });
}

#[test]
fn a_file_that_sets_nothing_or_a_public_per_caller_stops_the_server() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("policy.toml");
    let data = dir.path().join("data");
    let args = [
        "--policy",
        file.to_str().expect("utf-8"),
        "--data-dir",
        data.to_str().expect("utf-8"),
    ];
    for (text, needle) in [
        ("", "`empty = true`"),
        ("# the policy, cut before its first entry\n", "`empty = true`"),
        (
            "[methods.sign_up]\nenabled = false\n\n[limits.methods.refresh]\nper_ip = \"60/min\"\nper_caller = \"30/min\"\n",
            ":4: limits.methods.\"refresh\": `per_caller` cannot apply: the method is public",
        ),
        (
            "empty = true\n[methods.sign_up]\nenabled = false\n",
            ":1: `empty = true`, but the file has entries",
        ),
    ] {
        std::fs::write(&file, text).expect("write");
        let stderr = serve_refused(&args, &[]);
        assert!(stderr.contains("policy.toml"), "{stderr}");
        assert!(stderr.contains(needle), "{needle} in {stderr}");
    }
    // Said on purpose, an empty policy starts the server.
    std::fs::write(&file, "empty = true\n").expect("write");
    let server = ServerProcess::start(&args, &[]);
    assert!(std::net::TcpStream::connect(server.addr).is_ok());
}

/// A reload is fail-closed: an empty file, one cut before its first entry,
/// and one with a budget that cannot apply are each refused (with the log
/// saying why) and the policy in force stays; `empty = true` is obeyed.
#[test]
fn sighup_refuses_an_empty_or_cut_file_and_keeps_the_policy_in_force() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("policy.toml");
    let in_force =
        "[methods.sign_up]\nenabled = false\n\n[limits.methods.sign_in]\nper_ip = \"100/min\"\n";
    std::fs::write(&file, in_force).expect("write");
    let data = dir.path().join("data");
    let server = ServerProcess::start(
        &[
            "--policy",
            file.to_str().expect("utf-8"),
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        &[],
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = server.client(None);
        let sign_up = |name: &'static str| {
            let client = client.clone();
            async move {
                call(
                    &client,
                    "sign_up",
                    json!({ "username": name, "password": PASSWORD }),
                )
                .await
            }
        };
        assert_error(sign_up("alice").await, -32601, "Method not found");
        for (refused, (text, why)) in [
            ("", "`empty = true`"),
            ("# sign_up stays off\n", "`empty = true`"),
            (
                "[methods.sign_up]\nenabled = false\n\n[limits.methods.refresh]\nper_caller = \"30/min\"\n",
                "limits.methods.\"refresh\"",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            std::fs::write(&file, text).expect("write");
            hangup(&server);
            wait_for_log(&server, "rpcguard policy reload refused", refused + 1);
            let log = server.log();
            let last = log
                .lines()
                .rev()
                .find(|l| l.starts_with("rpcguard policy reload refused"))
                .unwrap_or_default();
            assert!(last.contains(why), "{why} in {last}");
            // The policy in force stayed: sign_up is still off.
            assert_error(sign_up("alice").await, -32601, "Method not found");
        }
        assert_eq!(server.log().matches("rpcguard policy reloaded").count(), 0);
        // Said on purpose: no policy, sign_up back.
        std::fs::write(&file, "empty = true\n").expect("write");
        hangup(&server);
        wait_for_log(&server, "rpcguard policy reloaded", 1);
        let user = sign_up("alice").await.expect("sign_up is on again");
        assert_eq!(user["username"], "alice");
    });
}

fn hangup(server: &ServerProcess) {
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(sent, 0, "kill -HUP");
}

fn wait_for_log(server: &ServerProcess, line: &str, count: usize) {
    let started = Instant::now();
    while server.log().matches(line).count() < count {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {line:?} in:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `rpcguard openrpc --policy FILE` prints what a server with that policy
/// serves, and the official validator accepts it.
#[tokio::test]
#[cfg_attr(
    rpcguard_no_node,
    ignore = "Node.js: run `npm ci --prefix tests/clients/openrpc`"
)]
async fn openrpc_command_shows_the_policy_and_the_validator_accepts_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, EVERY_KEY).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["openrpc", "--policy", file.to_str().expect("utf-8")])
        .output()
        .expect("rpcguard openrpc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| {
        c.server.policy = Policy::load(&file).expect("valid");
    })
    .await
    .expect("sqlite");
    let token = app.signed_in("alice").await;
    let mut live = app
        .call(Some(&token), "rpc.discover", json!({}))
        .await
        .expect("doc");
    live["servers"] = printed["servers"].clone();
    assert_eq!(printed, live);
    assert!(method(&printed, "authenticate").is_none());
    let saved = dir.path().join("openrpc.json");
    std::fs::write(&saved, &out.stdout).expect("write");
    crate::openrpc::validate_with_node(saved.to_str().expect("utf-8")).await;
}

/// The document under a policy through the HTTP client used elsewhere: the
/// anonymous caller is refused rpc.discover when the policy secures it.
#[tokio::test]
async fn policy_applies_to_http_and_websocket_alike() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| {
        c.server.policy = policy(EVERY_KEY);
    })
    .await
    .expect("sqlite");
    let token = app.signed_in("alice").await;
    let ws = app.ws(Some(&token)).await;
    let err = call(&ws, "get_caller", json!({}))
        .await
        .expect_err("needs reader");
    assert_eq!(err.code(), -32099);
    let err = ws
        .request::<Value, _>("authenticate", jsonrpsee::rpc_params![token.clone()])
        .await
        .expect_err("disabled");
    match err {
        jsonrpsee::core::ClientError::Call(err) => assert_eq!(err.code(), -32601),
        other => panic!("{other:?}"),
    }
}

/// Without `--policy`, a SIGHUP (an operator's reflex) neither ends the
/// server nor changes anything.
#[test]
fn sighup_without_a_policy_file_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = ServerProcess::start(&["--data-dir", data.to_str().expect("utf-8")], &[]);
    // At once: the handler is in place before the "listening" line.
    hangup(&server);
    std::thread::sleep(Duration::from_millis(300));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let doc = call(&server.client(None), "rpc.discover", json!({}))
            .await
            .expect("still serving");
        assert!(method(&doc, "get_caller").is_some());
    });
}

/// The guide's complete example policy file is valid for the reference server,
/// and does what its comments say.
#[tokio::test]
async fn the_readme_policy_example_is_valid() {
    let readme = include_str!("../../docs/policy.md");
    let from = readme
        .find("A complete example, every key used:")
        .expect("docs/policy.md");
    let start = readme[from..].find("```toml\n").expect("its toml block") + from + 8;
    let end = readme[start..].find("```").expect("end of the block") + start;
    let example = policy(&readme[start..end]);
    assert!(!example.methods["sign_up"].enabled);
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| c.server.policy = example)
        .await
        .expect("sqlite");
    assert_error(
        app.sign_up("alice", PASSWORD).await,
        -32601,
        "Method not found",
    );
    assert_unauthenticated(
        app.call(None, "rpc.discover", json!({})).await,
        "missing_token",
    );
}
