//! The exact in-memory auth state (issue 10): every write is seen by the
//! very next call, on HTTP and on an open WebSocket session, whatever path
//! made it, while the common call reads no store; memory stays bounded.

use std::time::{Duration, Instant};

use jsonrpsee::ws_client::WsClient;
use serde_json::json;

use crate::both_stores;
use crate::cli::rpcguard_user;
use crate::helpers::*;

const FLIPS: usize = 100;

/// How long a PostgreSQL change may take to reach an instance before a
/// test fails (the measured p99 is far below; CI machines are loaded).
const FEED_BOUND: Duration = Duration::from_secs(5);

/// These tests sign in many times from one address.
fn unthrottled(config: &mut rpcguard_accounts::config::Config) {
    config.throttle = rpcguard_accounts::throttle::ThrottleConfig {
        per_account_and_ip: 0,
        per_ip: 0,
        per_account: 0,
    };
}

fn name(raw: &str) -> rpcguard_accounts::Username {
    rpcguard_accounts::Username::parse(raw).expect("valid name")
}

fn scope1() -> Vec<rpcguard_accounts::Scope> {
    vec![rpcguard_accounts::Scope::parse("scope1").expect("valid scope")]
}

/// `require_scopes` over HTTP and over the open session: both `allowed`?
async fn observes(app: &TestApp, ws: &WsClient, token: &str, allowed: bool, what: &str) {
    let over_http = app.call(Some(token), "require_scopes", json!({})).await;
    let over_ws = call(ws, "require_scopes", json!({})).await;
    for (transport, answer) in [("HTTP", over_http), ("WebSocket", over_ws)] {
        match (allowed, answer) {
            (true, Ok(value)) => assert_eq!(value, json!(true)),
            (false, Err(err)) => assert_eq!(err.code(), -32099, "{what} over {transport}: {err:?}"),
            (_, other) => {
                panic!("{what} over {transport}: expected allowed={allowed}, got {other:?}")
            }
        }
    }
}

both_stores! {
    async fn in_process_grants_and_revokes_are_seen_by_the_next_call(app) {
        let token = app.signed_in("alice").await;
        let ws = app.ws(Some(&token)).await;
        observes(&app, &ws, &token, false, "before").await;
        for flip in 0..FLIPS {
            app.grant("alice", "scope1").await;
            observes(&app, &ws, &token, true, &format!("grant {flip}")).await;
            app.revoke("alice", "scope1").await;
            observes(&app, &ws, &token, false, &format!("revoke {flip}")).await;
        }
    }

    async fn in_process_deletes_are_seen_by_the_next_call(app) config(c) { unthrottled(c); } {
        for round in 0..FLIPS {
            let user = format!("gone{round}");
            let token = app.signed_in(&user).await;
            let ws = app.ws(Some(&token)).await;
            assert!(app.call(Some(&token), "get_caller", json!({})).await.is_ok());
            assert!(call(&ws, "get_caller", json!({})).await.is_ok());
            assert!(app.store.delete_user(&name(&user)).await.expect("delete"));
            assert_unauthenticated(app.call(Some(&token), "get_caller", json!({})).await, "invalid_token");
            assert_unauthenticated(call(&ws, "get_caller", json!({})).await, "invalid_token");
        }
    }

    async fn users_in_memory_are_bounded(app) config(c) { unthrottled(c); c.auth_cache_users = 20; } {
        let mut tokens = Vec::new();
        for n in 0..35 {
            tokens.push(app.signed_in(&format!("user{n}")).await);
        }
        for round in 0..2 {
            for token in &tokens {
                app.call(Some(token), "get_caller", json!({})).await.expect("get_caller");
                assert!(app.users.cached_users() <= 20, "round {round}: {}", app.users.cached_users());
            }
        }
        assert_eq!(app.users.cached_users(), 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_writes_on_sqlite_are_seen_by_the_first_call_after_the_command() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, unthrottled)
        .await
        .expect("sqlite");
    let token = app.signed_in("alice").await;
    let ws = app.ws(Some(&token)).await;
    for flip in 0..FLIPS {
        rpcguard_user(&app, &["grant", "alice", "scope1"], "");
        observes(&app, &ws, &token, true, &format!("CLI grant {flip}")).await;
        rpcguard_user(&app, &["revoke", "alice", "scope1"], "");
        observes(&app, &ws, &token, false, &format!("CLI revoke {flip}")).await;
    }
    for round in 0..FLIPS {
        let user = format!("cli{round}");
        let token = app.signed_in(&user).await;
        let ws = app.ws(Some(&token)).await;
        assert!(app
            .call(Some(&token), "get_caller", json!({}))
            .await
            .is_ok());
        rpcguard_user(&app, &["delete", &user], "");
        assert_unauthenticated(
            app.call(Some(&token), "get_caller", json!({})).await,
            "invalid_token",
        );
        assert_unauthenticated(call(&ws, "get_caller", json!({})).await, "invalid_token");
    }
}

/// A server on a fresh PostgreSQL database (instance B), a store of its
/// own on the same database (a separate pool, as instance A or the CLI
/// would commit), and alice's token. `None` without PostgreSQL.
async fn instance_and_writer() -> Option<(TestApp, rpcguard_accounts::store::SharedStore, String)> {
    let app = TestApp::spawn_with(StoreKind::Postgres, |_| {}).await?;
    let url = app.config.database_url.clone().expect("postgres");
    let writer = rpcguard_accounts::store::open(&url, 2)
        .await
        .expect("writer");
    let token = app.signed_in("alice").await;
    Some((app, writer, token))
}

/// p50, p99 and max of `delays`, in milliseconds.
fn percentiles(mut delays: Vec<Duration>) -> (f64, f64, f64) {
    delays.sort();
    let at = |q: f64| {
        let i = ((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len()) - 1;
        delays[i].as_secs_f64() * 1e3
    };
    (at(0.5), at(0.99), at(1.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn postgres_writes_reach_other_instances_within_the_bound() {
    let Some((app, writer, token)) = instance_and_writer().await else {
        return;
    };
    let http = app.client(Some(&token));
    let ws = app.ws(Some(&token)).await;
    let mut delays = Vec::new();
    for _ in 0..FLIPS {
        writer
            .grant(&name("alice"), &scope1())
            .await
            .expect("grant");
        delays.push(require_scopes_becomes(&http, true, FEED_BOUND).await);
        writer
            .revoke(&name("alice"), &scope1())
            .await
            .expect("revoke");
        delays.push(require_scopes_becomes(&ws, false, FEED_BOUND).await);
    }
    let (p50, p99, max) = percentiles(delays);
    eprintln!("revocation across instances: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms over {} writes", 2 * FLIPS);
    // The target is p99 <= 50 ms; the test allows for a loaded CI machine.
    assert!(p99 < 250.0, "p99 {p99:.1} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn a_lost_change_feed_falls_back_to_the_store_and_comes_back() {
    let Some((app, writer, token)) = instance_and_writer().await else {
        return;
    };
    let http = app.client(Some(&token));
    let url = app.config.database_url.clone().expect("postgres");
    let admin = std::env::var(PG_URL_VAR).expect("admin url");
    let database = url.rsplit('/').next().expect("db name").to_owned();
    for round in 0..5 {
        // Warm the map, then cut the LISTEN connection.
        assert!(call(&http, "require_scopes", json!({})).await.is_err());
        let terminated: i64 = {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
            sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND query ILIKE 'LISTEN%') t",
            )
            .bind(&database)
            .fetch_one(&mut conn)
            .await
            .expect("terminate")
        };
        assert_eq!(terminated, 1, "round {round}: one LISTEN connection");
        let cut = Instant::now();
        while app.users.is_live() && cut.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Until the loss is noticed, a write made meanwhile is not yet seen
        // (the bound the README states); from then on every call reads the
        // store, so writes while the feed is down are seen at once.
        let noticed = cut.elapsed();
        eprintln!("round {round}: the lost feed was noticed after {noticed:?}");
        assert!(
            noticed < Duration::from_secs(1),
            "round {round}: {noticed:?}"
        );
        if !app.users.is_live() {
            writer
                .grant(&name("alice"), &scope1())
                .await
                .expect("grant");
            assert!(call(&http, "require_scopes", json!({})).await.is_ok() || app.users.is_live());
        } else {
            writer
                .grant(&name("alice"), &scope1())
                .await
                .expect("grant");
        }
        let delay = require_scopes_becomes(&http, true, FEED_BOUND).await;
        assert!(
            delay < Duration::from_millis(500),
            "round {round}: {delay:?}"
        );
        writer
            .revoke(&name("alice"), &scope1())
            .await
            .expect("revoke");
        let delay = require_scopes_becomes(&http, false, FEED_BOUND).await;
        assert!(
            delay < Duration::from_millis(500),
            "round {round}: {delay:?}"
        );
        // The feed comes back by itself.
        let started = Instant::now();
        while !app.users.is_live() {
            assert!(started.elapsed() < Duration::from_secs(5), "feed not back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// On SQLite, a commit by another process (here: `rpcguard user grant`)
/// drops from memory only the users it changed; the others are still
/// answered without a store read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_elsewhere_drop_only_the_users_they_change() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, unthrottled)
        .await
        .expect("sqlite");
    let mut tokens = Vec::new();
    for n in 0..10 {
        tokens.push(app.signed_in(&format!("user{n}")).await);
    }
    for token in &tokens {
        app.call(Some(token), "get_caller", json!({}))
            .await
            .expect("get_caller");
    }
    assert_eq!(app.users.cached_users(), 10);
    rpcguard_user(&app, &["grant", "user3", "scope1"], "");
    app.call(Some(&tokens[0]), "get_caller", json!({}))
        .await
        .expect("get_caller");
    assert_eq!(app.users.cached_users(), 9, "only user3 dropped");
    let user3 = app.call(Some(&tokens[3]), "get_caller", json!({})).await;
    assert_eq!(
        user3.expect("get_caller")["scopes"]["Bearer"],
        json!(["scope1"])
    );
    assert_eq!(app.users.cached_users(), 10);
}

/// If change-log entries disappear before the server has read them, it
/// cannot tell which users changed, so it drops every user from memory
/// rather than answer from a stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_entries_purged_unread_drop_every_user() {
    use sqlx::Connection;
    let app = TestApp::spawn_with(StoreKind::Sqlite, unthrottled)
        .await
        .expect("sqlite");
    let alice = app.signed_in("alice").await;
    let bob = app.signed_in("bob").await;
    for token in [&alice, &bob] {
        assert!(app
            .call(Some(token), "require_scopes", json!({}))
            .await
            .is_err());
    }
    assert_eq!(app.users.cached_users(), 2);
    let path = app
        .data_dir
        .path()
        .join(rpcguard_accounts::config::DATABASE_FILE_NAME);
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open");
    let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
    sqlx::query(
        "INSERT INTO user_scopes (user_id, scope) \
         SELECT id, 'scope1' FROM users WHERE username_key = 'bob'",
    )
    .execute(&mut *tx)
    .await
    .expect("grant by hand");
    sqlx::query("DELETE FROM changes")
        .execute(&mut *tx)
        .await
        .expect("purge");
    tx.commit().await.expect("commit");
    // alice's call notices the commit, finds its entry gone, drops all.
    assert!(app
        .call(Some(&alice), "require_scopes", json!({}))
        .await
        .is_err());
    assert_eq!(app.users.cached_users(), 1);
    assert_eq!(
        app.call(Some(&bob), "require_scopes", json!({}))
            .await
            .expect("bob"),
        json!(true)
    );
}
