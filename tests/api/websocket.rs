//! WebSocket sessions: authorized at the upgrade, expiring mid-session.

use std::time::Duration;

use jsonrpsee::ws_client::WsClientBuilder;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn session_authorized_by_the_upgrade_header() {
    let app = TestApp::spawn().await;
    let token = app.signed_in("alice").await;
    let ws = app.ws(Some(&token)).await;
    for _ in 0..3 {
        let me = call(&ws, "get_caller", json!({}))
            .await
            .expect("get_caller");
        assert_eq!(me["username"], "alice");
    }
    assert_eq!(
        call(&ws, "require_scopes", json!({}))
            .await
            .expect_err("denied")
            .code(),
        -32099
    );
    call(
        &ws,
        "sign_up",
        json!({"username": "bob", "password": PASSWORD}),
    )
    .await
    .expect("public method");

    let anonymous = app.ws(None).await;
    assert_unauthenticated(
        call(&anonymous, "get_caller", json!({})).await,
        "missing_token",
    );
}

#[tokio::test]
async fn session_authorized_by_the_access_token_query() {
    let app = TestApp::spawn().await;
    let token = app.signed_in("alice").await;
    for path in ["", "api/v1"] {
        let ws = WsClientBuilder::default()
            .build(format!("{}{path}?access_token={token}", app.ws_url))
            .await
            .expect("connect");
        assert_eq!(
            call(&ws, "get_caller", json!({}))
                .await
                .expect("get_caller")["username"],
            "alice"
        );
    }
    // A query token on plain HTTP is not accepted (RFC 6750 discourages it).
    let (_, body) = app
        .http
        .post(format!("{}?access_token={token}", app.url))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"get_caller"}"#)
        .send()
        .await
        .map(|r| (r.status(), r))
        .expect("post");
    let body: serde_json::Value = body.json().await.expect("json");
    assert_eq!(body["error"]["data"]["reason"], "missing_token");
}

#[tokio::test]
async fn session_stops_authorizing_at_token_expiry() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, manual_clock)
        .await
        .expect("app");
    let token = app.signed_in("alice").await;
    let exp = token_claims(&token)["exp"].as_u64().expect("exp");
    assert_eq!(exp, app.now() + app.config.token_ttl.as_secs());
    let ws = app.ws(Some(&token)).await;
    assert_eq!(
        call(&ws, "get_caller", json!({})).await.expect("fresh")["username"],
        "alice"
    );
    // At exp the token still authorizes; once the clock passes exp, not.
    app.clock().set(exp);
    assert_eq!(
        call(&ws, "get_caller", json!({})).await.expect("at exp")["username"],
        "alice"
    );
    app.clock().advance(Duration::from_secs(1));
    assert_unauthenticated(call(&ws, "get_caller", json!({})).await, "expired_token");
    // The session itself still works for public methods.
    call(&ws, "rpc.discover", json!({}))
        .await
        .expect("public method after expiry");
}

#[tokio::test]
async fn scope_granted_mid_session_applies_at_once() {
    let app = TestApp::spawn().await;
    let token = app.signed_in("alice").await;
    let ws = app.ws(Some(&token)).await;
    assert_eq!(
        call(&ws, "require_scopes", json!({}))
            .await
            .expect_err("denied")
            .code(),
        -32099
    );
    app.grant("alice", "scope1").await;
    assert_eq!(
        call(&ws, "require_scopes", json!({}))
            .await
            .expect("allowed"),
        json!(true)
    );
    app.revoke("alice", "scope1").await;
    assert_eq!(
        call(&ws, "require_scopes", json!({}))
            .await
            .expect_err("revoked")
            .code(),
        -32099
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_answers_websocket_calls_in_flight_first() {
    // bcrypt at cost 10 keeps the sign_up in flight while the server stops.
    let mut app = TestApp::spawn_with(StoreKind::Sqlite, |c| c.bcrypt_cost = 10)
        .await
        .expect("app");
    let ws = app.ws(None).await;
    let in_flight = tokio::spawn(async move {
        call(
            &ws,
            "sign_up",
            json!({"username": "inflight", "password": PASSWORD}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.stop().await;
    // stop() returned: the answer was written before it did (the hash
    // takes far longer than this wait).
    let answer = tokio::time::timeout(Duration::from_millis(200), in_flight)
        .await
        .expect("stop() waited for the call in flight")
        .expect("join");
    assert_eq!(answer.expect("answered")["username"], "inflight");
}
