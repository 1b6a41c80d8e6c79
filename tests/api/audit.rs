//! Logs and security events (issue 25): `--log-format json` writes one
//! JSON object per line and nothing else; call lines carry the client
//! address and the request id (a trusted proxy's `X-Request-Id`, echoed);
//! the `rpcguard::audit` target carries each security event once with its
//! fixed fields; no secret at any level.

use serde_json::{json, Value};

use crate::helpers::*;

/// A server behind a "proxy" (this test, on 127.0.0.1, trusted), logging
/// JSON at `debug`.
fn json_server(dir: &std::path::Path) -> ServerProcess {
    let data_dir = dir.to_str().expect("utf-8");
    let mut args = vec![
        "--data-dir",
        data_dir,
        "--log-format",
        "json",
        "--trusted-proxies",
        "127.0.0.1/32",
    ];
    args.extend(NO_SIGNIN_THROTTLE);
    ServerProcess::start(&args, &[("RUST_LOG", "debug")])
}

/// POSTs one call as client `client` (X-Forwarded-For) with request id
/// `id`; returns the answer and the echoed `X-Request-Id`.
async fn post(
    server: &ServerProcess,
    client: &str,
    id: &str,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> (Value, String) {
    let mut request = reqwest::Client::new()
        .post(&server.url)
        .header("content-type", "application/json")
        .header("x-forwarded-for", client)
        .header("x-request-id", id)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("post");
    let echoed = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.json().await.expect("json"), echoed)
}

/// The server's JSON log lines, once `pred` holds for one of them (10 s at
/// most, [`ServerProcess::log_when`]).
fn lines_when(server: &ServerProcess, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let lines = |log: &str| -> Vec<Value> {
        log.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON object: {line:?}"))
            })
            .collect()
    };
    lines(&server.log_when(|log| lines(log).iter().any(&pred)))
}

fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["target"] == "rpcguard::audit" && l["event"] == event)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_call_lines_and_security_events() {
    let dir = tempfile::tempdir().expect("dir");
    let server = json_server(dir.path());
    let (answer, echoed) = post(
        &server,
        "203.0.113.9",
        "req-sign-up",
        None,
        "sign_up",
        json!({ "username": "alice", "password": PASSWORD }),
    )
    .await;
    assert!(answer["result"].is_object(), "{answer}");
    assert_eq!(echoed, "req-sign-up", "a trusted proxy's id is echoed");
    // Unknown user and wrong password: one event, one reason.
    for (name, password) in [("alice", "Not The Password 1"), ("nobody", PASSWORD)] {
        let (answer, _) = post(
            &server,
            "203.0.113.9",
            "req-failed",
            None,
            "sign_in",
            json!({ "username": name, "password": password }),
        )
        .await;
        assert_eq!(answer["error"]["code"], -32002);
    }
    let (token, _) = post(
        &server,
        "203.0.113.9",
        "req-sign-in",
        None,
        "sign_in",
        json!({ "username": "alice", "password": PASSWORD }),
    )
    .await;
    let access = token["result"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let refresh = token["result"]["refresh_token"]
        .as_str()
        .expect("r")
        .to_owned();
    let (answer, _) = post(
        &server,
        "198.51.100.4",
        "req-anon",
        None,
        "get_caller",
        json!({}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32001);
    let (renewed, _) = post(
        &server,
        "203.0.113.9",
        "req-refresh",
        None,
        "refresh",
        json!({ "refresh_token": refresh }),
    )
    .await;
    let renewed_access = renewed["result"]["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let renewed_refresh = renewed["result"]["refresh_token"]
        .as_str()
        .expect("r")
        .to_owned();
    let (answer, _) = post(
        &server,
        "192.0.2.66",
        "req-reuse",
        None,
        "refresh",
        json!({ "refresh_token": refresh }),
    )
    .await;
    assert_eq!(answer["error"]["data"]["reason"], "revoked_token");
    // A new session: change the password, then sign out.
    let (token, _) = post(
        &server,
        "203.0.113.9",
        "req-sign-in-2",
        None,
        "sign_in",
        json!({ "username": "alice", "password": PASSWORD }),
    )
    .await;
    let access_2 = token["result"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (answer, _) = post(
        &server,
        "203.0.113.9",
        "req-passwd",
        Some(&access_2),
        "change_password",
        json!({ "old_password": PASSWORD, "new_password": "battery staple horse" }),
    )
    .await;
    assert_eq!(answer["result"], true, "{answer}");
    let (answer, _) = post(
        &server,
        "203.0.113.9",
        "req-sign-out",
        Some(&access_2),
        "sign_out",
        json!({}),
    )
    .await;
    assert_eq!(answer["result"], true, "{answer}");

    let lines = lines_when(&server, |l| l["event"] == "sign_out");
    // Every line is an object with the fixed keys (and ours a message).
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line.get(key).is_some(), "{key} missing: {line}");
        }
        if line["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("rpcguard"))
        {
            assert!(line.get("message").is_some(), "{line}");
        }
    }
    // Call lines: client address (as the proxy named it) and request id.
    let call = lines
        .iter()
        .find(|l| l["target"] == "rpcguard::call" && l["method"] == "sign_up")
        .expect("sign_up call line");
    assert_eq!(call["client_addr"], "203.0.113.9", "{call}");
    assert_eq!(call["request_id"], "req-sign-up", "{call}");
    assert_eq!(call["outcome"], 0);
    assert!(call["latency_us"].is_u64(), "{call}");

    let one = |event: &str| {
        let found = events(&lines, event);
        assert_eq!(found.len(), 1, "{event}: {found:?}");
        found[0].clone()
    };
    let fields = [
        "username",
        "issuer",
        "client_addr",
        "session",
        "request_id",
        "reason",
    ];
    for event in [
        "sign_up",
        "token_refused",
        "refresh",
        "refresh_reuse",
        "password_changed",
        "sign_out",
    ] {
        let line = one(event);
        for field in fields {
            assert!(line.get(field).is_some(), "{event} lacks {field}: {line}");
        }
    }
    assert_eq!(one("sign_up")["username"], "alice");
    assert_eq!(one("sign_up")["client_addr"], "203.0.113.9");
    assert_eq!(one("sign_up")["request_id"], "req-sign-up");
    let failed = events(&lines, "sign_in_failed");
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed.iter().all(|e| e["reason"] == "bad_credentials"),
        "{failed:?}"
    );
    let signed_in = events(&lines, "sign_in");
    assert_eq!(signed_in.len(), 2);
    assert_eq!(signed_in[0]["session"].as_str().map(str::len), Some(32));
    assert_eq!(one("token_refused")["reason"], "missing_token");
    assert_eq!(one("token_refused")["client_addr"], "198.51.100.4");
    assert_eq!(one("refresh")["session"], signed_in[0]["session"]);
    let reuse = one("refresh_reuse");
    assert_eq!(reuse["client_addr"], "192.0.2.66");
    assert_eq!(reuse["username"], "alice");
    assert_eq!(reuse["session"], signed_in[0]["session"]);
    assert_eq!(one("password_changed")["session"], signed_in[1]["session"]);
    assert_eq!(one("sign_out")["reason"], "this_session");

    // No secret in any line, at debug level.
    let log = server.log();
    for secret in [
        PASSWORD,
        "Not The Password 1",
        "battery staple horse",
        access.as_str(),
        refresh.as_str(),
        renewed_access.as_str(),
        renewed_refresh.as_str(),
        access_2.as_str(),
        "$2b$",
    ] {
        let leaked: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaked.is_empty(),
            "a secret is in the log: {secret}: {leaked:?}"
        );
    }
}

/// From a peer that is not a trusted proxy, `X-Request-Id` and
/// `X-Forwarded-For` are not taken: the server makes its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_names_no_request_id() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8");
    let server = ServerProcess::start(&["--data-dir", data_dir], &[]);
    let (_, echoed) = post(
        &server,
        "203.0.113.9",
        "forged-id",
        None,
        "rpc.discover",
        json!({}),
    )
    .await;
    assert!(!echoed.is_empty(), "an id is always echoed");
    assert_ne!(echoed, "forged-id");
    let (_, second) = post(
        &server,
        "203.0.113.9",
        "forged-id",
        None,
        "rpc.discover",
        json!({}),
    )
    .await;
    assert_ne!(echoed, second, "ids are unique");
}

/// A key rotated by the CLI while the server runs is one `key_rotated`
/// event, naming the new key's id, when the server picks the key up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_seen_by_the_server_is_an_event() {
    let dir = tempfile::tempdir().expect("dir");
    let server = json_server(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["key", "rotate", "--alg", "EdDSA", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("rpcguard key rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = lines_when(&server, |l| l["event"] == "key_rotated");
    let rotated = events(&lines, "key_rotated");
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    let kid = rotated[0]["reason"].as_str().expect("kid");
    assert!(kid.starts_with("eddsa-"), "{kid}");
}

/// `rpcguard user …` run against the server's store: the server writes
/// each change in its own audit stream when it sees it (SQLite: at its next
/// call, from the change log; PostgreSQL: from the change channel).
async fn admin_changes_reach_the_servers_audit_stream(database_url: Option<String>) {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8").to_owned();
    let mut args = vec!["--data-dir", data_dir.as_str(), "--log-format", "json"];
    if let Some(url) = &database_url {
        args.extend(["--database-url", url.as_str()]);
    }
    let server = ServerProcess::start(&args, &[]);
    let client = server.client(None);
    call(
        &client,
        "sign_up",
        json!({ "username": "erin", "password": PASSWORD }),
    )
    .await
    .expect("sign_up");
    let witness = signed_in_through(&client, "fred").await;
    let cli = |words: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"));
        command
            .arg("user")
            .args(words)
            .args(["--data-dir", &data_dir])
            .env("RUST_LOG", "warn");
        if let Some(url) = &database_url {
            command.args(["--database-url", url]);
        }
        let out = command.output().expect("rpcguard user");
        assert!(
            out.status.success(),
            "{words:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&["grant", "erin", "reports", "admin"]);
    cli(&["revoke", "erin", "admin"]);
    cli(&["disable", "erin"]);
    cli(&["enable", "erin"]);
    cli(&["sign-out", "erin"]);
    cli(&["delete", "erin"]);
    // A secured call makes a SQLite server look at its change log.
    call(&server.client(Some(&witness)), "get_caller", json!({}))
        .await
        .expect("get_caller");
    let lines = lines_when(&server, |l| l["event"] == "account_deleted");
    for (event, reason) in [
        ("scopes_granted", "admin reports admin"),
        ("scopes_revoked", "admin admin"),
        ("account_disabled", "admin 0 sessions ended"),
        ("account_enabled", "admin"),
        ("sessions_ended", "admin 0 sessions ended"),
        ("account_deleted", "admin"),
    ] {
        let found = events(&lines, event);
        assert_eq!(found.len(), 1, "{event}: {found:?}");
        assert_eq!(found[0]["username"], "erin", "{event}");
        assert_eq!(found[0]["reason"], reason, "{event}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_reach_the_audit_stream_sqlite() {
    admin_changes_reach_the_servers_audit_stream(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn admin_changes_reach_the_audit_stream_postgres() {
    if let Some(url) = fresh_postgres_database().await {
        admin_changes_reach_the_servers_audit_stream(Some(url)).await;
    }
}
