//! `examples/resource_server.rs` against a real rpcguard signing EdDSA
//! tokens: the example verifies them with rpcguard's JWKS alone (it has no
//! secret and no database) and enforces the same `MethodSecurity`
//! declarations, scopes from the token's `scope` claim.

use serde_json::{json, Value};

use crate::helpers::*;

fn client_of(url: &str, token: Option<&str>) -> jsonrpsee::http_client::HttpClient {
    jsonrpsee::http_client::HttpClientBuilder::default()
        .set_headers(bearer_headers(token))
        .build(url)
        .expect("client")
}

async fn token_of(rpcguard: &ServerProcess, name: &str) -> String {
    let anonymous = rpcguard.client(None);
    let answer = call(
        &anonymous,
        "sign_in",
        json!({ "username": name, "password": PASSWORD }),
    )
    .await
    .expect("sign_in");
    answer["access_token"].as_str().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_server_example_verifies_rpcguard_tokens_with_the_jwks_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let mut args = vec!["--data-dir", data_dir, "--jwt-alg", "EdDSA"];
    args.extend(NO_SIGNIN_THROTTLE);
    let rpcguard = ServerProcess::start(&args, &[]);
    let anonymous = rpcguard.client(None);
    for name in ["alice", "bob"] {
        call(
            &anonymous,
            "sign_up",
            json!({ "username": name, "password": PASSWORD }),
        )
        .await
        .expect("sign_up");
    }
    let granted = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["user", "grant", "alice", "reports", "--data-dir", data_dir])
        .output()
        .expect("rpcguard user grant");
    assert!(granted.status.success(), "{granted:?}");
    let alice = token_of(&rpcguard, "alice").await;
    let bob = token_of(&rpcguard, "bob").await;
    assert_eq!(token_claims(&alice)["scope"], "reports");
    assert!(token_claims(&bob).get("scope").is_none());

    let example = ExampleProcess::start("resource_server", |command| {
        command
            .env("RPCGUARD_URL", &rpcguard.url)
            .env("ADDR", "127.0.0.1:0")
            .env_remove("RPCGUARD_SECRET")
    });
    let url = example.url.clone();
    let report = json!({ "month": "2026-11" });
    let as_alice = client_of(&url, Some(&alice));
    assert_eq!(
        call(&as_alice, "whoami", json!({})).await.expect("whoami"),
        json!({ "username": "alice", "scopes": ["reports"] })
    );
    let answer = call(&as_alice, "monthly_report", report.clone())
        .await
        .expect("alice holds reports");
    assert_eq!(answer["requested_by"], "alice");

    let as_bob = client_of(&url, Some(&bob));
    assert_eq!(
        call(&as_bob, "whoami", json!({})).await.expect("bob")["username"],
        "bob"
    );
    let denied = call(&as_bob, "monthly_report", report.clone()).await;
    let err = assert_error(denied, -32099, "Permission error");
    let data: Value = serde_json::from_str(err.data().expect("data").get()).expect("json");
    assert_eq!(data, json!({ "missing_scopes": { "Bearer": ["reports"] } }));

    assert_unauthenticated(
        call(&client_of(&url, None), "whoami", json!({})).await,
        "missing_token",
    );
    // A token whose payload was changed (bob claiming alice's scope).
    let mut parts: Vec<String> = bob.split('.').map(str::to_owned).collect();
    let mut claims = token_claims(&bob);
    claims["scope"] = json!("reports");
    parts[1] = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    };
    let tampered = parts.join(".");
    assert_unauthenticated(
        call(
            &client_of(&url, Some(&tampered)),
            "monthly_report",
            report.clone(),
        )
        .await,
        "invalid_token",
    );
    // After a rotation at the issuer, new tokens are found with one fetch.
    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["key", "rotate", "--alg", "ES256", "--data-dir", data_dir])
        .output()
        .expect("rpcguard key rotate");
    assert!(rotated.status.success(), "{rotated:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let es256 = loop {
        let token = token_of(&rpcguard, "alice").await;
        let header = jsonwebtoken::decode_header(&token).expect("header");
        if header.alg == jsonwebtoken::Algorithm::ES256 {
            break token;
        }
        assert!(std::time::Instant::now() < deadline, "rotation not seen");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        call(&client_of(&url, Some(&es256)), "whoami", json!({}))
            .await
            .expect("rotated")["username"],
        "alice"
    );
    // The older EdDSA token still verifies (the key is in its grace).
    assert!(call(&as_alice, "whoami", json!({})).await.is_ok());
    // A token of another rpcguard (same issuer name, other keys): its
    // kid is unknown, and the JWKS was fetched less than a cooldown ago.
    let other = TestApp::spawn_with(StoreKind::Sqlite, |c| {
        c.jwt_alg = Some(rpcguard_accounts::keys::KeyAlg::EdDSA)
    })
    .await
    .expect("sqlite");
    let stranger = other.signed_in("alice").await;
    assert_unauthenticated(
        call(&client_of(&url, Some(&stranger)), "whoami", json!({})).await,
        "invalid_token",
    );
}
