//! The log as `rpcguard serve` writes it, batched per thread (issue 28):
//! a connection's call lines in the order of its calls whichever worker ran
//! them, every line logged before a warning ahead of that warning, and no
//! line lost when the server exits on SIGTERM.

use serde_json::{json, Value};

use crate::helpers::*;

/// Connections calling at once, and calls each makes, per burst.
const CONNECTIONS: usize = 4;
const CALLS: usize = 50;

/// POSTs one call with request id `id` (the test is a trusted proxy).
async fn post(
    client: &reqwest::Client,
    server: &ServerProcess,
    id: &str,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> Value {
    let mut request = client
        .post(&server.url)
        .header("x-request-id", id)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("post");
    response.json().await.expect("json")
}

/// [`CONNECTIONS`] keep-alive connections at once, each making [`CALLS`]
/// `get_caller` calls one after another, with request ids
/// `{burst}{connection}-{call:03}`.
async fn burst(server: &ServerProcess, token: &str, burst: &str) {
    let calls = (0..CONNECTIONS).map(|connection| async move {
        let client = reqwest::Client::new();
        for call in 0..CALLS {
            let id = format!("{burst}{connection}-{call:03}");
            let answer = post(&client, server, &id, Some(token), "get_caller", json!({})).await;
            assert_eq!(answer["result"]["username"], "logged", "{answer}");
        }
    });
    futures::future::join_all(calls).await;
}

/// The request id of a call line of `burst`, as (connection, call).
fn call_of(line: &str, burst: &str) -> Option<(usize, usize)> {
    if !line.contains(" INFO rpcguard::call: call method=\"get_caller\"") {
        return None;
    }
    let id = line.split("request_id=\"").nth(1)?.split('"').next()?;
    let (connection, call) = id.strip_prefix(burst)?.split_once('-')?;
    Some((connection.parse().ok()?, call.parse().ok()?))
}

/// Checks that every call of `burst` is logged once, each connection's in
/// the order of its calls.
fn assert_each_connection_in_order(lines: &[&str], burst: &str) {
    let mut seen = vec![Vec::new(); CONNECTIONS];
    for (connection, call) in lines.iter().filter_map(|l| call_of(l, burst)) {
        seen[connection].push(call);
    }
    for (connection, calls) in seen.iter().enumerate() {
        assert_eq!(
            calls,
            &(0..CALLS).collect::<Vec<_>>(),
            "connection {connection} of burst {burst}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_lines_come_out_in_order_before_a_warning_and_all_by_exit() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8");
    let mut args = vec![
        "--data-dir",
        data_dir,
        "--trusted-proxies",
        "127.0.0.1/32",
        "--drain-delay",
        "0",
    ];
    args.extend(NO_SIGNIN_THROTTLE);
    let mut server = ServerProcess::start(&args, &[]);
    let client = reqwest::Client::new();
    let user = json!({ "username": "logged", "password": PASSWORD });
    post(&client, &server, "sign-up", None, "sign_up", user.clone()).await;
    let session = post(&client, &server, "sign-in", None, "sign_in", user.clone()).await;
    let token = session["result"]["access_token"].as_str().expect("token");
    let refresh = session["result"]["refresh_token"]
        .as_str()
        .expect("refresh");

    burst(&server, token, "a").await;
    // A refresh token used twice: a warning, written at once after every
    // line logged before it (the call lines above wait in buffers).
    let again = json!({ "refresh_token": refresh });
    post(&client, &server, "rotate", None, "refresh", again.clone()).await;
    let reused = post(&client, &server, "reuse", None, "refresh", again).await;
    assert_eq!(
        reused["error"]["data"]["reason"], "revoked_token",
        "{reused}"
    );
    let log = server.log_when(|log| log.contains("refresh token reused"));
    let lines: Vec<&str> = log.lines().collect();
    let warning = lines
        .iter()
        .position(|l| l.contains(" WARN ") && l.contains("refresh token reused"))
        .expect("the warning");
    assert_each_connection_in_order(&lines[..warning], "a");

    // The reuse ended the session: another one.
    let session = post(&client, &server, "sign-in-2", None, "sign_in", user).await;
    let token = session["result"]["access_token"].as_str().expect("token");
    burst(&server, token, "b").await;
    let (server, status) = tokio::task::spawn_blocking(move || {
        let status = server.terminate().expect("exited within 20 s");
        (server, status)
    })
    .await
    .expect("join");
    assert!(status.success(), "{status}");
    // The reader thread may still be reading the pipe's last bytes.
    let log = server.log_when(|log| {
        log.lines().filter(|l| call_of(l, "b").is_some()).count() >= CONNECTIONS * CALLS
    });
    let lines: Vec<&str> = log.lines().collect();
    assert_each_connection_in_order(&lines, "a");
    assert_each_connection_in_order(&lines, "b");
}
