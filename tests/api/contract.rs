//! Every row of DESIGN.md's error table, against the real server.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::both_stores;
use crate::helpers::*;

/// Signs `claims` with the server's own (HS256) signing key, read from its
/// key set (data dir or database), naming it by its `kid`, under the `alg` header given.
pub fn forge(app: &TestApp, claims: &Value, alg: Algorithm) -> String {
    let (kid, key) = app_signing_key(app);
    let mut header = Header::new(alg);
    header.kid = Some(kid);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&key)).expect("encode")
}

both_stores! {
    async fn missing_token(app) {
        assert_unauthenticated(app.call(None, "get_caller", json!({})).await, "missing_token");
        assert_unauthenticated(app.call(None, "require_scopes", json!({})).await, "missing_token");
    }

    async fn invalid_tokens(app) {
        let token = app.signed_in("alice").await;
        // Forgeries carry alice's real account id, so each is refused for
        // the one thing it changes.
        let real = token_claims(&token);
        let alice = |edit: fn(&mut serde_json::Map<String, Value>)| {
            claims_for("alice", |c| {
                c.insert("uid".into(), real["uid"].clone());
                c.insert("sid".into(), real["sid"].clone());
                edit(c);
            })
        };
        let other_key = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &alice(|_| {}),
            &EncodingKey::from_secret(&[9u8; 32]),
        )
        .expect("encode");
        let mut bad = vec![
            "not-a-jwt".to_owned(),
            "a.b.c".to_owned(),
            other_key,
            forge(&app, &alice(|_| {}), Algorithm::HS384),
            forge(&app, &alice(|c| { c.insert("aud".into(), json!("someone-else")); }), Algorithm::HS256),
            forge(&app, &alice(|c| { c.insert("iss".into(), json!("evil")); }), Algorithm::HS256),
            forge(&app, &alice(|c| { c.remove("exp"); }), Algorithm::HS256),
            forge(&app, &claims_for("nobody", |_| {}), Algorithm::HS256),
        ];
        // The real token with its signature's last character changed.
        let mut flipped = token.clone();
        let last = flipped.pop().expect("non-empty");
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        bad.push(flipped);
        for token in bad {
            assert_unauthenticated(app.call(Some(&token), "get_caller", json!({})).await, "invalid_token");
        }
        // The real one still works.
        assert_eq!(app.call(Some(&token), "get_caller", json!({})).await.expect("ok")["username"], "alice");
        // And so does the forgeries' base, signed right: each differs only by its change.
        let base = forge(&app, &alice(|_| {}), Algorithm::HS256);
        assert_eq!(app.call(Some(&base), "get_caller", json!({})).await.expect("ok")["username"], "alice");
    }

    async fn expired_token(app) {
        app.signed_in("alice").await;
        let expired = forge(&app, &claims_for("alice", |c| {
            let now = c["iat"].as_u64().expect("iat");
            c.insert("iat".into(), json!(now - 100));
            c.insert("exp".into(), json!(now - 1));
        }), Algorithm::HS256);
        assert_unauthenticated(app.call(Some(&expired), "get_caller", json!({})).await, "expired_token");
    }

    async fn token_of_deleted_user(app) config(c) { manual_clock(c); } {
        let token = app.signed_in("alice").await;
        let name = rpcguard_accounts::Username::parse("alice").expect("valid");
        assert!(app.store.delete_user(&name).await.expect("delete"));
        assert_unauthenticated(app.call(Some(&token), "get_caller", json!({})).await, "invalid_token");
        // A new account of the same name, created a second after the token
        // was issued, does not revive the old token (the same second is
        // hardening.rs's case).
        app.clock().advance(std::time::Duration::from_secs(1));
        let again = app.sign_up("alice", PASSWORD).await.expect("sign up again");
        let created = rpcguard_accounts::clock::format_rfc3339(app.now() as i64);
        assert_eq!(again["created_at"], created.as_str(), "created on the server's clock");
        assert_unauthenticated(app.call(Some(&token), "get_caller", json!({})).await, "invalid_token");
    }

    async fn permission_error(app) {
        let token = app.signed_in("alice").await;
        let err = assert_error(app.call(Some(&token), "require_scopes", json!({})).await, -32099, "Permission error");
        let data: Value = serde_json::from_str(err.data().expect("data").get()).expect("json");
        assert_eq!(data, json!({ "missing_scopes": { "Bearer": ["scope1"] } }));
    }

    async fn sign_in_failures_are_identical(app) {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let unknown = app.sign_in("nobody", PASSWORD).await.expect_err("unknown user");
        let wrong = app.sign_in("alice", "wrong password").await.expect_err("wrong password");
        assert_eq!(unknown, wrong);
        assert_eq!((unknown.code(), unknown.message()), (-32002, "Authentication failed"));
        assert!(unknown.data().is_none());
    }

    async fn username_taken(app) {
        app.sign_up("Alice", PASSWORD).await.expect("first");
        let err = assert_error(app.sign_up("alice", "another password").await, -32003, "Username taken");
        assert!(err.data().is_none());
        // Never overwritten: the first password still signs in.
        app.sign_in("ALICE", PASSWORD).await.expect("original password");
        assert_eq!(app.store.count_users().await.expect("count"), 1);
    }

    async fn throttled_sign_in(app) {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        for _ in 0..5 {
            assert_error(app.sign_in("alice", "wrong password").await, -32002, "Authentication failed");
        }
        let err = assert_error(app.sign_in("alice", PASSWORD).await, -32005, "Too many requests");
        let data: Value = serde_json::from_str(err.data().expect("data").get()).expect("json");
        assert!(data["retry_after_s"].as_u64().expect("retry_after_s") >= 1, "{data}");
    }

    async fn invalid_params_store_nothing(app) {
        let cases = [
            ("alice", ""),
            ("alice", "7bytes!"),
            ("alice", &"x".repeat(73)),
            ("al", PASSWORD),
            ("a b c", PASSWORD),
            ("../etc", PASSWORD),
            ("' OR 1=1 --", PASSWORD),
            (&"a".repeat(65), PASSWORD),
        ];
        for (name, password) in cases {
            let err = assert_error(app.sign_up(name, password).await, -32602, "Invalid params");
            let data = err.data().map(|d| d.get().to_owned()).unwrap_or_default();
            if !password.is_empty() {
                assert!(!data.contains(password), "password echoed: {data}");
            }
        }
        app.sign_up("alice", &"x".repeat(72)).await.expect("72 bytes is fine");
        assert_eq!(app.store.count_users().await.expect("count"), 1);
    }

    async fn internal_error_leaks_nothing(app) {
        let token = app.signed_in("alice").await;
        break_store(&app).await;
        // Dropping tables is no row change: on PostgreSQL no trigger tells
        // the in-memory copy, which would answer alice from memory.
        app.users.clear();
        for result in [
            app.call(Some(&token), "get_caller", json!({})).await,
            app.sign_in("alice", PASSWORD).await,
        ] {
            let err = assert_error(result, -32603, "Internal error");
            assert!(err.data().is_none(), "{err:?}");
        }
    }
}

/// Drops the store's tables behind the server's back.
async fn break_store(app: &TestApp) {
    use sqlx::Connection;
    const DROPS: [&str; 4] = [
        "DROP TABLE refresh_tokens",
        "DROP TABLE sessions",
        "DROP TABLE user_scopes",
        "DROP TABLE users",
    ];
    match &app.config.database_url {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            for drop in DROPS {
                sqlx::query(drop).execute(&mut conn).await.expect("drop");
            }
        }
        None => {
            let path = app.data_dir.path().join("rpcguard.db");
            let url = format!("sqlite://{}", path.display());
            let mut conn = sqlx::SqliteConnection::connect(&url)
                .await
                .expect("connect");
            for drop in DROPS {
                sqlx::query(drop).execute(&mut conn).await.expect("drop");
            }
        }
    }
}
