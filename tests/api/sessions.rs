//! Sessions (issue 11): refresh rotation and reuse detection, sign-out
//! reaching open WebSocket sessions, `authenticate`, scope-limited tokens,
//! disabled accounts, password changes, the purge, and several instances
//! on one PostgreSQL database. Every store-dependent test runs on both
//! stores.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_stores;
use crate::cli::rpcguard_user;
use crate::helpers::*;

/// No sign-in or refresh budgets: these tests sign in and refresh many
/// times from one address (the budgets have tests of their own in
/// `signin_path.rs` and `integrity.rs`).
fn unthrottled(config: &mut rpcguard_accounts::config::Config) {
    config.throttle = rpcguard_accounts::throttle::ThrottleConfig {
        per_account_and_ip: 0,
        per_ip: 0,
        per_account: 0,
    };
    config.refresh_throttle = rpcguard_accounts::throttle::RefreshConfig {
        per_ip: 0,
        per_session: 0,
    };
}

/// The `Token` of a fresh session of `username` (signed up already).
async fn session(app: &TestApp, username: &str) -> Value {
    app.sign_in(username, PASSWORD).await.expect("sign_in")
}

fn access(token: &Value) -> String {
    token["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn refresh_token(token: &Value) -> String {
    token["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

async fn refresh(
    app: &TestApp,
    refresh_token: &str,
) -> Result<Value, jsonrpsee::types::ErrorObjectOwned> {
    app.call(None, "refresh", json!({ "refresh_token": refresh_token }))
        .await
}

async fn me(app: &TestApp, token: &str) -> Result<Value, jsonrpsee::types::ErrorObjectOwned> {
    app.call(Some(token), "get_caller", json!({})).await
}

fn now() -> u64 {
    rpcguard_accounts::clock::unix_now().expect("clock")
}

both_stores! {
    async fn sign_in_opens_a_session_and_refresh_rotates(app) config(c) { unthrottled(c); } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let first = session(&app, "alice").await;
        assert_eq!(first["token_type"], "bearer");
        assert_eq!(first["expires_in"], 900);
        assert_eq!(first["scope"], "");
        let refresh_1 = refresh_token(&first);
        assert_eq!(refresh_1.len(), 43, "256 bits, base64url");
        let claims = token_claims(&access(&first));
        assert_eq!(claims["sid"].as_str().expect("sid").len(), 32);

        let second = refresh(&app, &refresh_1).await.expect("refresh");
        assert_ne!(refresh_token(&second), refresh_1);
        assert_ne!(access(&second), access(&first));
        assert_eq!(token_claims(&access(&second))["sid"], claims["sid"], "same session");
        assert_eq!(me(&app, &access(&second)).await.expect("new token")["username"], "alice");
        assert_eq!(me(&app, &access(&first)).await.expect("older token, same live session")["username"], "alice");
        // Positional params work too.
        let third = call_positional(&app.client(None), "refresh", vec![json!(refresh_token(&second))])
            .await
            .expect("refresh by position");

        // The rotated token again: reuse. The whole session ends, every
        // access token of it and its current refresh token too.
        assert_unauthenticated(refresh(&app, &refresh_1).await, "revoked_token");
        for token in [&first, &second, &third] {
            assert_unauthenticated(me(&app, &access(token)).await, "revoked_token");
        }
        assert_unauthenticated(refresh(&app, &refresh_token(&third)).await, "revoked_token");
        // Another session of the same user is untouched.
        let other = session(&app, "alice").await;
        assert_eq!(me(&app, &access(&other)).await.expect("other session")["username"], "alice");
    }

    async fn two_clients_racing_one_refresh_token(app) config(c) { unthrottled(c); } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        for round in 0..3 {
            let token = session(&app, "alice").await;
            let stolen = refresh_token(&token);
            let clients: Vec<_> = (0..8).map(|_| app.client(None)).collect();
            let racers = clients.iter().map(|client| {
                let stolen = stolen.clone();
                async move { call(client, "refresh", json!({ "refresh_token": stolen })).await }
            });
            let answers = futures::future::join_all(racers).await;
            let winners: Vec<&Value> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
            assert_eq!(winners.len(), 1, "round {round}: exactly one wins: {answers:?}");
            for loser in answers.iter().filter(|a| a.is_err()) {
                assert_unauthenticated(loser.clone(), "revoked_token");
            }
            // The losers were reuse: the session ended, the winner's tokens too.
            assert_unauthenticated(me(&app, &access(winners[0])).await, "revoked_token");
            assert_unauthenticated(refresh(&app, &refresh_token(winners[0])).await, "revoked_token");
        }
    }

    async fn unknown_malformed_and_expired_refresh_tokens(app) config(c) {
        unthrottled(c);
        c.refresh_ttl = Duration::from_secs(1);
        manual_clock(c);
    } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let made_up = "A".repeat(43);
        for bad in ["", "short", made_up.as_str(), &"x".repeat(300), "Bearer abc"] {
            assert_unauthenticated(refresh(&app, bad).await, "invalid_token");
        }
        // A refresh token refreshes until its last second (issued + TTL)...
        let token = session(&app, "alice").await;
        app.clock().advance(Duration::from_secs(1));
        let next = refresh(&app, &refresh_token(&token)).await.expect("at its last second");
        // ...and not after it.
        app.clock().advance(Duration::from_secs(2));
        assert_unauthenticated(refresh(&app, &refresh_token(&next)).await, "expired_token");
        // The access token lives its own (longer) life.
        assert_eq!(me(&app, &access(&next)).await.expect("access token")["username"], "alice");
    }

    async fn sign_out_on_http_ends_an_open_websocket_sessions_next_call(app) config(c) { unthrottled(c); } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let token = session(&app, "alice").await;
        let other = session(&app, "alice").await;
        let ws = app.ws(Some(&access(&token))).await;
        assert_eq!(call(&ws, "get_caller", json!({})).await.expect("before")["username"], "alice");
        assert_eq!(app.call(Some(&access(&token)), "sign_out", json!({})).await.expect("sign_out"), json!(true));
        // The very next call, on the open socket and over HTTP.
        assert_unauthenticated(call(&ws, "get_caller", json!({})).await, "revoked_token");
        assert_unauthenticated(me(&app, &access(&token)).await, "revoked_token");
        assert_unauthenticated(refresh(&app, &refresh_token(&token)).await, "revoked_token");
        // The socket stays open: public methods still answer on it.
        call(&ws, "sign_up", json!({"username": "bob", "password": PASSWORD})).await.expect("socket open");
        // Only that session ended.
        assert_eq!(me(&app, &access(&other)).await.expect("other session")["username"], "alice");

        // everywhere: every session of the user, open sockets included.
        let third = session(&app, "alice").await;
        let ws_other = app.ws(Some(&access(&other))).await;
        assert_eq!(call(&ws_other, "get_caller", json!({})).await.expect("before")["username"], "alice");
        assert_eq!(
            app.call(Some(&access(&third)), "sign_out", json!({"everywhere": true})).await.expect("everywhere"),
            json!(true)
        );
        assert_unauthenticated(call(&ws_other, "get_caller", json!({})).await, "revoked_token");
        for token in [&other, &third] {
            assert_unauthenticated(me(&app, &access(token)).await, "revoked_token");
            assert_unauthenticated(refresh(&app, &refresh_token(token)).await, "revoked_token");
        }
        // Signing in again opens a new session.
        assert_eq!(me(&app, &access(&session(&app, "alice").await)).await.expect("new")["username"], "alice");
    }

    async fn authenticate_keeps_a_websocket_session_past_its_first_tokens_exp(app) config(c) {
        unthrottled(c);
        c.token_ttl = Duration::from_secs(3);
        manual_clock(c);
    } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let first = session(&app, "alice").await;
        let first_exp = token_claims(&access(&first))["exp"].as_u64().expect("exp");
        let ws = app.ws(Some(&access(&first))).await;
        let plain = app.ws(Some(&access(&first))).await; // never re-authenticates
        assert_eq!(call(&ws, "get_caller", json!({})).await.expect("first token")["username"], "alice");
        // A newer token (one with a later exp) through refresh.
        app.clock().advance(Duration::from_secs(1));
        let second = refresh(&app, &refresh_token(&first)).await.expect("refresh");
        let second_exp = token_claims(&access(&second))["exp"].as_u64().expect("exp");
        assert!(second_exp > first_exp);
        let user = call(&ws, "authenticate", json!({"access_token": access(&second)})).await.expect("authenticate");
        assert_eq!(user["username"], "alice");
        // A bad token is refused and changes nothing.
        assert_unauthenticated(call(&ws, "authenticate", json!({"access_token": "nope"})).await, "invalid_token");
        // Past the first token's exp, at the second's.
        app.clock().set(second_exp);
        assert!(app.now() > first_exp);
        assert_eq!(call(&ws, "get_caller", json!({})).await.expect("past the first exp")["username"], "alice");
        assert_unauthenticated(call(&plain, "get_caller", json!({})).await, "expired_token");
        // Over HTTP there is no session to bind.
        let http = app.call(None, "authenticate", json!({"access_token": access(&second)})).await;
        assert_error(http, -32602, "Invalid params");
        // A session authorized by nothing at the upgrade can authenticate too,
        // and an ended session stops the bound token as well.
        let anonymous = app.ws(None).await;
        assert_unauthenticated(call(&anonymous, "get_caller", json!({})).await, "missing_token");
        call(&anonymous, "authenticate", json!({"access_token": access(&second)})).await.expect("bind");
        assert_eq!(call(&anonymous, "get_caller", json!({})).await.expect("bound")["username"], "alice");
        app.call(Some(&access(&second)), "sign_out", json!({})).await.expect("sign_out");
        assert_unauthenticated(call(&anonymous, "get_caller", json!({})).await, "revoked_token");
        assert_unauthenticated(call(&ws, "get_caller", json!({})).await, "revoked_token");
    }

    async fn scope_limited_token_cannot_use_a_scope_it_left_out(app) config(c) { unthrottled(c); } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let sign_in = |scopes: Value| {
            let app = &app;
            async move {
                app.call(None, "sign_in", json!({"username": "alice", "password": PASSWORD, "scopes": scopes}))
                    .await
                    .expect("sign_in")
            }
        };
        let reader = sign_in(json!(["reader"])).await;
        let limited = sign_in(json!(["scope1"])).await;
        let nothing = sign_in(json!([])).await;
        let unlimited = session(&app, "alice").await;
        for token in [&reader, &limited, &nothing, &unlimited] {
            assert_eq!(token["scope"], "", "nothing held yet");
            assert_eq!(app.call(Some(&access(token)), "require_scopes", json!({})).await.expect_err("denied").code(), -32099);
        }
        app.grant("alice", "scope1").await;
        app.grant("alice", "reader").await;
        // Held now ∩ the token's limit, at every call.
        let denied = app.call(Some(&access(&reader)), "require_scopes", json!({})).await;
        let err = assert_error(denied, -32099, "Permission error");
        let data: Value = serde_json::from_str(err.data().expect("data").get()).expect("json");
        assert_eq!(data, json!({"missing_scopes": {"Bearer": ["scope1"]}}));
        assert_error(app.call(Some(&access(&nothing)), "require_scopes", json!({})).await, -32099, "Permission error");
        assert_eq!(me(&app, &access(&nothing)).await.expect("signed-in methods still work")["username"], "alice");
        // get_caller shows what the token may use.
        for (token, shown) in [
            (&reader, json!(["reader"])),
            (&limited, json!(["scope1"])),
            (&nothing, json!([])),
            (&unlimited, json!(["reader", "scope1"])),
        ] {
            assert_eq!(me(&app, &access(token)).await.expect("get_caller")["scopes"]["Bearer"], shown);
        }
        for token in [&limited, &unlimited] {
            assert_eq!(app.call(Some(&access(token)), "require_scopes", json!({})).await.expect("allowed"), json!(true));
        }
        // The limit survives a refresh, and `scope` tells what is in force.
        let refreshed = refresh(&app, &refresh_token(&reader)).await.expect("refresh");
        assert_eq!(refreshed["scope"], "reader");
        assert_error(app.call(Some(&access(&refreshed)), "require_scopes", json!({})).await, -32099, "Permission error");
        assert_eq!(refresh(&app, &refresh_token(&unlimited)).await.expect("refresh")["scope"], "reader scope1");
        // Revoking still wins over the limit.
        app.revoke("alice", "scope1").await;
        assert_error(app.call(Some(&access(&limited)), "require_scopes", json!({})).await, -32099, "Permission error");
        // A bad scope name is a bad param, never echoed.
        let bad = app.call(None, "sign_in", json!({"username": "alice", "password": PASSWORD, "scopes": ["no spaces allowed"]})).await;
        let err = assert_error(bad, -32602, "Invalid params");
        assert!(!err.data().map(|d| d.get().contains("no spaces")).unwrap_or(false), "{err:?}");
    }

    async fn disabled_account(app) config(c) { unthrottled(c); } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let token = session(&app, "alice").await;
        let ws = app.ws(Some(&access(&token))).await;
        assert_eq!(call(&ws, "get_caller", json!({})).await.expect("before")["username"], "alice");
        let alice = rpcguard_accounts::Username::parse("alice").expect("name");
        app.store.set_disabled(&alice, true, now() as i64).await.expect("disable");
        assert_unauthenticated(me(&app, &access(&token)).await, "revoked_token");
        assert_unauthenticated(call(&ws, "get_caller", json!({})).await, "revoked_token");
        assert_unauthenticated(refresh(&app, &refresh_token(&token)).await, "revoked_token");
        // -32004 only after the right password.
        assert_error(app.sign_in("alice", PASSWORD).await, -32004, "Account disabled");
        let wrong = assert_error(app.sign_in("alice", "wrong password!").await, -32002, "Authentication failed");
        assert!(wrong.data().is_none());
        assert_error(app.sign_in("nobody", PASSWORD).await, -32002, "Authentication failed");
        app.store.set_disabled(&alice, false, now() as i64).await.expect("enable");
        // Enabled again: new sessions work; the ended ones stay ended.
        assert_eq!(me(&app, &access(&session(&app, "alice").await)).await.expect("enabled")["username"], "alice");
        assert_unauthenticated(me(&app, &access(&token)).await, "revoked_token");
    }

    async fn change_password_ends_other_sessions_and_keeps_this_one(app) config(c) { unthrottled(c); } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let this = session(&app, "alice").await;
        let other = session(&app, "alice").await;
        let ws_other = app.ws(Some(&access(&other))).await;
        let wrong = app.call(Some(&access(&this)), "change_password",
            json!({"old_password": "not the password", "new_password": "a brand new password"})).await;
        assert_error(wrong, -32002, "Authentication failed");
        assert_eq!(me(&app, &access(&other)).await.expect("nothing ended")["username"], "alice");
        let short = app.call(Some(&access(&this)), "change_password",
            json!({"old_password": PASSWORD, "new_password": "short"})).await;
        assert_error(short, -32602, "Invalid params");
        let changed = app.call(Some(&access(&this)), "change_password",
            json!({"old_password": PASSWORD, "new_password": "a brand new password"})).await;
        assert_eq!(changed.expect("changed"), json!(true));
        assert_eq!(me(&app, &access(&this)).await.expect("this session goes on")["username"], "alice");
        assert_unauthenticated(me(&app, &access(&other)).await, "revoked_token");
        assert_unauthenticated(call(&ws_other, "get_caller", json!({})).await, "revoked_token");
        assert_unauthenticated(refresh(&app, &refresh_token(&other)).await, "revoked_token");
        refresh(&app, &refresh_token(&this)).await.expect("this session refreshes");
        assert_error(app.sign_in("alice", PASSWORD).await, -32002, "Authentication failed");
        app.sign_in("alice", "a brand new password").await.expect("new password");
    }

    async fn change_password_is_throttled_like_sign_in(app) {
        // The default budgets: 5 attempts per (account, address) a minute.
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let token = session(&app, "alice").await;
        let mut codes = Vec::new();
        for _ in 0..7 {
            let answer = app.call(Some(&access(&token)), "change_password",
                json!({"old_password": "not the password", "new_password": "a brand new password"})).await;
            codes.push(answer.expect_err("wrong old password").code());
        }
        // One sign_in above drew from the same budget.
        assert_eq!(codes, [-32002, -32002, -32002, -32002, -32005, -32005, -32005], "{codes:?}");
    }

    async fn flood_of_random_refresh_tokens_is_cheap_and_changes_nothing(app) config(c) {
        unthrottled(c);
        c.bcrypt_cost = 8;
    } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let token = session(&app, "alice").await;
        let rows_before = app.store.session_rows().await.expect("rows");
        // What one bcrypt check costs here (a wrong password, cost 8).
        let started = Instant::now();
        assert_error(app.sign_in("alice", "wrong password!").await, -32002, "Authentication failed");
        let one_bcrypt = started.elapsed();
        let started = Instant::now();
        let mut calls = 0u32;
        for batch in 0..4 {
            let body: Vec<Value> = (0..100)
                .map(|i| {
                    use base64::Engine;
                    let random = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(uuid::Uuid::new_v4().as_bytes().repeat(2));
                    json!({"jsonrpc": "2.0", "id": batch * 100 + i, "method": "refresh", "params": [random]})
                })
                .collect();
            let (status, answers) = app.post_raw(Value::Array(body).to_string(), Default::default()).await;
            assert_eq!(status, 200);
            for answer in answers.as_array().expect("batch answer") {
                assert_eq!(answer["error"]["data"]["reason"], "invalid_token", "{answer}");
                calls += 1;
            }
        }
        let flood = started.elapsed();
        let per_call = flood / calls;
        eprintln!("{calls} random refresh tokens in {flood:?} ({per_call:?} each); one bcrypt at cost 8: {one_bcrypt:?}");
        assert!(per_call * 10 < one_bcrypt, "a refresh costs {per_call:?}, a bcrypt check {one_bcrypt:?}");
        assert_eq!(app.store.session_rows().await.expect("rows"), rows_before, "nothing stored");
        // The real session is untouched.
        assert_eq!(me(&app, &access(&token)).await.expect("still valid")["username"], "alice");
        refresh(&app, &refresh_token(&token)).await.expect("still refreshes");
    }

    async fn purge_keeps_session_storage_bounded(app) config(c) {
        unthrottled(c);
        c.token_ttl = Duration::from_secs(1);
        c.refresh_ttl = Duration::from_secs(1);
        manual_clock(c);
    } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        let a = session(&app, "alice").await;
        let b = session(&app, "alice").await;
        let a2 = refresh(&app, &refresh_token(&a)).await.expect("refresh");
        refresh(&app, &refresh_token(&a2)).await.expect("refresh");
        app.call(Some(&access(&b)), "sign_out", json!({})).await.expect("sign_out");
        assert_eq!(app.store.session_rows().await.expect("rows"), (2, 4));
        // Past the refresh lifetime and one access-token lifetime more.
        app.clock().advance(Duration::from_secs(3));
        let live = session(&app, "alice").await;
        let purged = rpcguard_accounts::app::purge_sessions(&app.accounts).await.expect("purge");
        assert!(purged >= 2, "the two old sessions (their refresh tokens go with them): {purged}");
        assert_eq!(app.store.session_rows().await.expect("rows"), (1, 1), "only the live session");
        assert_eq!(me(&app, &access(&live)).await.expect("live session")["username"], "alice");
        refresh(&app, &refresh_token(&live)).await.expect("live session refreshes");
        // A token of a purged session is refused like one of an ended session.
        assert_unauthenticated(refresh(&app, &refresh_token(&b)).await, "invalid_token");
    }

    async fn cli_sign_out_disable_and_list(app) config(c) { unthrottled(c); } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        app.sign_up("bob", PASSWORD).await.expect("sign_up");
        let first = session(&app, "alice").await;
        session(&app, "alice").await;
        let listing = rpcguard_user(&app, &["list"], "");
        assert!(listing.lines().any(|l| l.starts_with("alice\t") && l.ends_with("\tenabled\t2")), "{listing}");
        assert!(listing.lines().any(|l| l.starts_with("bob\t") && l.ends_with("\tenabled\t0")), "{listing}");

        let out = rpcguard_user(&app, &["sign-out", "alice"], "");
        assert!(out.contains("2 sessions ended"), "{out}");
        let answer = app.after_external_write(&access(&first), "get_caller", |a| a.is_err()).await;
        assert_unauthenticated(answer, "revoked_token");

        let second = session(&app, "alice").await;
        rpcguard_user(&app, &["disable", "alice"], "");
        let answer = app.after_external_write(&access(&second), "get_caller", |a| a.is_err()).await;
        assert_unauthenticated(answer, "revoked_token");
        assert_error(app.sign_in("alice", PASSWORD).await, -32004, "Account disabled");
        let listing = rpcguard_user(&app, &["list"], "");
        assert!(listing.lines().any(|l| l.starts_with("alice\t") && l.ends_with("\tdisabled\t0")), "{listing}");
        rpcguard_user(&app, &["enable", "alice"], "");
        app.sign_in("alice", PASSWORD).await.expect("enabled again");
    }
}

both_stores! {
    async fn every_session_end_is_seen_by_the_next_call(app) config(c) {
        unthrottled(c);
        c.auth_cache_users = 8;
    } {
        app.sign_up("alice", PASSWORD).await.expect("sign_up");
        // One WebSocket session for all rounds, re-bound to each new token.
        let ws = app.ws(None).await;
        for round in 0..30 {
            let token = session(&app, "alice").await;
            let access = access(&token);
            call(&ws, "authenticate", json!({"access_token": access})).await.expect("bind");
            assert_eq!(call(&ws, "get_caller", json!({})).await.expect("bound")["username"], "alice");
            assert_eq!(me(&app, &access).await.expect("live")["username"], "alice");
            // Three ways to end it: sign_out over HTTP, over the socket,
            // and through the store in this process.
            match round % 3 {
                0 => assert_eq!(app.call(Some(&access), "sign_out", json!({})).await.expect("sign_out"), json!(true)),
                1 => assert_eq!(call(&ws, "sign_out", json!({})).await.expect("sign_out"), json!(true)),
                _ => {
                    let sid = token_claims(&access)["sid"].as_str().expect("sid").to_owned();
                    assert!(app.store.end_session(&sid, now() as i64).await.expect("end"));
                }
            }
            assert_unauthenticated(call(&ws, "get_caller", json!({})).await, "revoked_token");
            assert_unauthenticated(me(&app, &access).await, "revoked_token");
        }
        assert!(app.users.cached_sessions() <= 8, "{} sessions in memory", app.users.cached_sessions());
    }
}

/// Sessions ended by another writer on the same PostgreSQL database reach
/// an instance through the change feed; while the feed is down, the
/// instance reads the store and still refuses an ended session at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn session_ends_reach_an_instance_through_the_feed_or_the_store() {
    let Some(app) = TestApp::spawn_with(StoreKind::Postgres, unthrottled).await else {
        return;
    };
    let url = app.config.database_url.clone().expect("postgres");
    let writer = rpcguard_accounts::store::open(&url, 2)
        .await
        .expect("writer");
    app.sign_up("alice", PASSWORD).await.expect("sign_up");
    let ws = app.ws(None).await;
    let mut delays = Vec::new();
    for _ in 0..20 {
        let token = access(&session(&app, "alice").await);
        call(&ws, "authenticate", json!({"access_token": token}))
            .await
            .expect("bind");
        assert_eq!(
            call(&ws, "get_caller", json!({})).await.expect("live")["username"],
            "alice"
        );
        let sid = token_claims(&token)["sid"]
            .as_str()
            .expect("sid")
            .to_owned();
        assert!(writer.end_session(&sid, now() as i64).await.expect("end"));
        let ended = Instant::now();
        loop {
            let answer = call(&ws, "get_caller", json!({})).await;
            if answer.is_err() {
                assert_unauthenticated(answer, "revoked_token");
                break;
            }
            assert!(
                ended.elapsed() < Duration::from_secs(1),
                "not seen within 1 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        delays.push(ended.elapsed());
    }
    delays.sort();
    eprintln!(
        "session ends by another writer seen after p50 {:?}, max {:?}",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );

    // Cut the LISTEN connection: once the loss is noticed, the instance
    // reads the store on every call, so an end is refused at once.
    let token = access(&session(&app, "alice").await);
    assert_eq!(me(&app, &token).await.expect("live")["username"], "alice");
    let admin = std::env::var(PG_URL_VAR).expect("admin url");
    let database = url.rsplit('/').next().expect("db name").to_owned();
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
        let terminated: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND query ILIKE 'LISTEN%') t",
        )
        .bind(&database)
        .fetch_one(&mut conn)
        .await
        .expect("terminate");
        assert_eq!(terminated, 1, "one LISTEN connection");
    }
    let cut = Instant::now();
    while app.users.is_live() && cut.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if !app.users.is_live() {
        let sid = token_claims(&token)["sid"]
            .as_str()
            .expect("sid")
            .to_owned();
        assert!(writer.end_session(&sid, now() as i64).await.expect("end"));
        if !app.users.is_live() {
            assert_unauthenticated(me(&app, &token).await, "revoked_token");
        }
    }
}

/// Two instances on one PostgreSQL database: a sign-out on A refuses the
/// token on B within the change feed's bound, and B refreshes a session
/// opened on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn sessions_across_two_instances() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let start = |url: String| async move {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = test_config(dir.path());
        unthrottled(&mut config);
        config.database_url = Some(url);
        config.secret = rpcguard_accounts::config::SecretSource::Value(
            b"a-shared-signing-key-of-at-least-32-bytes!".to_vec(),
        );
        TestApp::start(config, dir).await
    };
    let a = start(url.clone()).await;
    let b = start(url).await;
    a.sign_up("alice", PASSWORD).await.expect("sign_up");

    // Refresh on B of a session opened on A; both serve the new token.
    let on_a = session(&a, "alice").await;
    let on_b = refresh(&b, &refresh_token(&on_a))
        .await
        .expect("refresh on B");
    for app in [&a, &b] {
        assert_eq!(
            me(app, &access(&on_b)).await.expect("valid everywhere")["username"],
            "alice"
        );
    }
    // Reuse on A of the token B rotated: the session ends everywhere.
    assert_unauthenticated(refresh(&a, &refresh_token(&on_a)).await, "revoked_token");
    let ended_on_b = Instant::now();
    let mut answer = me(&b, &access(&on_b)).await;
    while answer.is_ok() && ended_on_b.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        answer = me(&b, &access(&on_b)).await;
    }
    assert_unauthenticated(answer, "revoked_token");

    // Sign out on A: B refuses the token within the bound (1 s allowed; the
    // NOTIFY feed's p99 is 16 ms, auth_state.rs).
    let token = session(&a, "alice").await;
    let ws_b = b.ws(Some(&access(&token))).await;
    assert_eq!(
        call(&ws_b, "get_caller", json!({})).await.expect("before")["username"],
        "alice"
    );
    a.call(Some(&access(&token)), "sign_out", json!({}))
        .await
        .expect("sign_out on A");
    let signed_out = Instant::now();
    let refused_after = loop {
        let answer = call(&ws_b, "get_caller", json!({})).await;
        if answer.is_err() {
            assert_unauthenticated(answer, "revoked_token");
            break signed_out.elapsed();
        }
        assert!(
            signed_out.elapsed() < Duration::from_secs(1),
            "B still accepts the token"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    eprintln!("sign-out on A refused on B's WebSocket session after {refused_after:?}");
    assert_unauthenticated(me(&b, &access(&token)).await, "revoked_token");
}
