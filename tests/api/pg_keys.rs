//! Issue 12 on PostgreSQL: the key set lives in the database and every
//! instance on it signs and verifies with it — created once when instances
//! start together on an empty database, imported from what the instances
//! used before (`keys.json`, a given secret), rotated through the CLI or
//! through one instance and seen by all without a restart, old keys
//! refused on all after their grace, and the key rows never in a log, an
//! answer or the JWKS.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;
use rpcguard_accounts::clock::Clock;
use rpcguard_accounts::keys::{KeyAlg, KeySet, PUBLISH_DELAY, RELOAD_SLACK};

/// How long after a rotation every instance signs with the new key: it is
/// published for [`PUBLISH_DELAY`] first, and then no reload is needed.
const SWITCH_WITHIN: Duration = Duration::from_secs(PUBLISH_DELAY.as_secs() + 2);

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("every token carries a kid")
}

/// Runs `rpcguard key ARGS --database-url URL --token-ttl TTL`: its exit
/// status and everything it printed.
fn rpcguard_key(url: &str, ttl: u64, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .arg("key")
        .args(args)
        .args(["--database-url", url, "--token-ttl", &ttl.to_string()])
        .env_remove("RPCGUARD_DATA_DIR")
        .env_remove("RPCGUARD_DATABASE_URL")
        .env_remove("RPCGUARD_TOKEN_TTL")
        .env("RUST_LOG", "debug")
        .output()
        .expect("run rpcguard key");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Starts one `rpcguard serve` per data dir on the database at `url` at the
/// same moment, with `args` and `env`.
fn start_together(
    url: &str,
    dirs: &[&tempfile::TempDir],
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<ServerProcess> {
    let mut env = env.to_vec();
    env.push(("RPCGUARD_DATABASE_URL", url));
    let env = &env;
    std::thread::scope(|scope| {
        let started: Vec<_> = dirs
            .iter()
            .map(|dir| {
                scope.spawn(move || {
                    let data_dir = dir.path().display().to_string();
                    let mut all = vec!["--data-dir", data_dir.as_str()];
                    all.extend_from_slice(&NO_SIGNIN_THROTTLE);
                    all.extend_from_slice(args);
                    ServerProcess::start(&all, env)
                })
            })
            .collect();
        started
            .into_iter()
            .map(|s| s.join().expect("an instance starts"))
            .collect()
    })
}

async fn sign_up_alice(server: &ServerProcess) {
    call(
        &server.client(None),
        "sign_up",
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await
    .expect("sign_up");
}

async fn token_from(server: &ServerProcess, name: &str) -> String {
    call(
        &server.client(None),
        "sign_in",
        json!({"username": name, "password": PASSWORD}),
    )
    .await
    .expect("sign_in")["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

async fn caller(
    server: &ServerProcess,
    token: &str,
) -> Result<Value, jsonrpsee::types::ErrorObjectOwned> {
    call(&server.client(Some(token)), "get_caller", json!({})).await
}

async fn jwks(server: &ServerProcess) -> String {
    reqwest::get(format!("{}.well-known/jwks.json", server.url))
        .await
        .expect("GET jwks")
        .text()
        .await
        .expect("body")
}

/// Signs in on `server` until its tokens carry a `kid` other than `old`
/// (at most `within`); that token.
async fn first_token_not_of(server: &ServerProcess, old: &str, within: Duration) -> String {
    last_and_first_token(server, old, within).await.1
}

/// The last token `server` signed with the key `old` (none if the first
/// one asked for was already of another key) and the first it signed with
/// another, asking every 100 ms.
async fn last_and_first_token(
    server: &ServerProcess,
    old: &str,
    within: Duration,
) -> (Option<String>, String) {
    let started = Instant::now();
    let mut last = None;
    loop {
        let token = token_from(server, "alice").await;
        if kid_of(&token) != old {
            return (last, token);
        }
        last = Some(token);
        assert!(
            started.elapsed() < within,
            "{} still signs with {old} after {within:?}",
            server.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A token for alice with the account and session of `real`, valid for a
/// minute from now, signed with `key` under `header`.
fn forged(real: &Value, header: &Header, key: &EncodingKey) -> String {
    let claims = claims_for("alice", |c| {
        c.insert("uid".into(), real["uid"].clone());
        c.insert("sid".into(), real["sid"].clone());
    });
    jsonwebtoken::encode(header, &claims, key).expect("encode")
}

fn encoding_key(alg: KeyAlg, material: &[u8]) -> EncodingKey {
    match alg {
        KeyAlg::HS256 => EncodingKey::from_secret(material),
        KeyAlg::EdDSA => EncodingKey::from_ed_der(material),
        KeyAlg::ES256 => EncodingKey::from_ec_der(material),
        KeyAlg::RS256 => EncodingKey::from_rsa_der(material),
    }
}

/// Pieces of every key's material in the forms it could leak in.
fn material_needles(sets: &[KeySet]) -> Vec<String> {
    let mut needles = Vec::new();
    for key in sets.iter().flat_map(|set| &set.keys) {
        let material = key.material().expect("material");
        let url = URL_SAFE_NO_PAD.encode(&material);
        needles.push(url[..url.len().min(40)].to_owned());
        let standard = STANDARD.encode(&material);
        needles.push(standard[..standard.len().min(40)].to_owned());
        needles.push(hex::encode(&material[material.len().saturating_sub(20)..]));
    }
    needles
}

/// Two instances start at once on an empty database: one key set (EdDSA),
/// the same JWKS from both, a token of A verifies on B. `key rotate`
/// through the CLI against the database: both sign with the new key within
/// seconds, without a restart, and a token from before keeps working on
/// both; after the grace the old key is refused on both, and the next
/// rotation prunes it from the database. No key material in any log
/// (debug level, sqlx included), answer, CLI output or JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn instances_share_the_database_key_set_and_see_a_cli_rotation() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    const TTL: u64 = 3;
    let ttl = TTL.to_string();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut servers = start_together(
        &url,
        &[&dir_a, &dir_b],
        &["--jwt-alg", "EdDSA", "--token-ttl", &ttl],
        &[("RUST_LOG", "debug")],
    );
    let b = servers.pop().expect("B");
    let a = servers.pop().expect("A");
    let mut sets = vec![database_key_set(&url)];
    assert_eq!(sets[0].keys.len(), 1, "one key set: {:?}", sets[0]);
    let first = sets[0].keys[0].clone();
    assert_eq!(first.alg, KeyAlg::EdDSA);
    for dir in [&dir_a, &dir_b] {
        assert!(
            !dir.path().join("keys.json").exists(),
            "no keys.json on PostgreSQL"
        );
    }

    sign_up_alice(&a).await;
    let old = token_from(&a, "alice").await;
    assert_eq!(kid_of(&old), first.kid);
    assert_eq!(kid_of(&token_from(&b, "alice").await), first.kid);
    let real = token_claims(&old);
    let mut answers = Vec::new();
    for server in [&a, &b] {
        let me = caller(server, &old)
            .await
            .expect("A's token verifies everywhere");
        assert_eq!(me["username"], "alice");
        answers.push(me.to_string());
    }
    let (jwks_a, jwks_b) = (jwks(&a).await, jwks(&b).await);
    assert_eq!(jwks_a, jwks_b, "one JWKS");
    let published: Value = serde_json::from_str(&jwks_a).expect("JSON");
    assert_eq!(
        published["keys"][0]["kid"],
        first.kid.as_str(),
        "{published}"
    );
    answers.extend([jwks_a, jwks_b]);

    // Rotation through the CLI, against the database. With tokens of
    // TTL s, "a token from before the rotation" is taken just before it.
    let before = token_from(&a, "alice").await;
    let (ok, said) = rpcguard_key(&url, TTL, &["rotate", "--alg", "ES256"]);
    assert!(ok, "{said}");
    assert!(said.contains("new signing key: es256-"), "{said}");
    answers.push(said);
    let rotated = Instant::now();
    // Published before it signs: both instances serve the new public key
    // (and so verify with it) while the old key still signs.
    for server in [&a, &b] {
        loop {
            let published: Value = serde_json::from_str(&jwks(server).await).expect("JSON");
            if published["keys"].as_array().map(Vec::len) == Some(2) {
                break;
            }
            assert!(
                rotated.elapsed() < Duration::from_millis(1500),
                "{} does not publish the new key: {published}",
                server.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        caller(server, &before)
            .await
            .expect("a token from before the rotation");
        let still = token_from(server, "alice").await;
        assert!(
            rotated.elapsed() < Duration::from_secs(2),
            "too slow to tell"
        );
        assert_eq!(
            kid_of(&still),
            first.kid,
            "the new key signs before it is published everywhere"
        );
    }
    for server in [&a, &b] {
        let (last_old, new) = last_and_first_token(server, &first.kid, SWITCH_WITHIN).await;
        assert!(kid_of(&new).starts_with("es256-"), "{new}");
        caller(&a, &new).await.expect("the new key verifies on A");
        caller(&b, &new).await.expect("the new key verifies on B");
        // The old key still verifies once the new one signs (checked with
        // its last token: `old` and `before` may have expired by now).
        if let Some(last_old) = last_old {
            for other in [&a, &b] {
                caller(other, &last_old)
                    .await
                    .expect("a token of the old key, after the switch");
            }
        }
    }
    sets.push(database_key_set(&url));
    let (ok, listed) = rpcguard_key(&url, TTL, &["list"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains(&format!("{}\tEdDSA\tverifying until", first.kid)),
        "{listed}"
    );
    assert!(listed.contains("\tES256\tsigning"), "{listed}");
    answers.push(listed);
    let both = jwks(&a).await;
    assert_eq!(both, jwks(&b).await);
    assert_eq!(
        serde_json::from_str::<Value>(&both).expect("JSON")["keys"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    answers.push(both);

    // After the grace, the old key verifies nothing on either instance,
    // even a token whose own `exp` is still ahead.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(first.kid.clone());
    let old_key = encoding_key(first.alg, &first.material().expect("material"));
    let grace = PUBLISH_DELAY + Duration::from_secs(TTL) + RELOAD_SLACK + Duration::from_secs(1);
    tokio::time::sleep(grace.saturating_sub(rotated.elapsed())).await;
    for server in [&a, &b] {
        assert_unauthenticated(
            caller(server, &forged(&real, &header, &old_key)).await,
            "invalid_token",
        );
        assert_unauthenticated(caller(server, &old).await, "expired_token");
    }
    // The next rotation prunes it from the database.
    let (ok, said) = rpcguard_key(&url, TTL, &["rotate"]);
    assert!(ok, "{said}");
    answers.push(said);
    sets.push(database_key_set(&url));
    let pruned = sets.last().expect("set");
    assert!(
        pruned.keys.iter().all(|key| key.kid != first.kid),
        "{pruned:?}"
    );
    assert_eq!(pruned.keys.len(), 2);
    first_token_not_of(&a, &sets[1].signing().expect("signing").kid, SWITCH_WITHIN).await;

    // No key material anywhere it could have been shown.
    let mut seen = answers.join("\n");
    seen.push_str(&a.log());
    seen.push_str(&b.log());
    assert!(
        a.log().contains("key set changed in the database"),
        "{}",
        a.log()
    );
    for needle in material_needles(&sets) {
        assert!(
            !seen.contains(&needle),
            "key material in a log, answer or output"
        );
    }
}

/// Rotation through one instance: restarting A with another `--jwt-alg`
/// rotates the database's set, and B (running on) signs with A's new key
/// within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn a_rotation_through_one_instance_reaches_the_other() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut servers = start_together(&url, &[&dir_a, &dir_b], &[], &[]);
    let b = servers.pop().expect("B");
    drop(servers); // A stops
    sign_up_alice(&b).await;
    let old = token_from(&b, "alice").await;
    assert_eq!(
        jsonwebtoken::decode_header(&old).expect("header").alg,
        Algorithm::HS256
    );
    let data_dir = dir_a.path().display().to_string();
    let mut args = vec!["--data-dir", data_dir.as_str(), "--jwt-alg", "RS256"];
    args.extend_from_slice(&NO_SIGNIN_THROTTLE);
    let a = ServerProcess::start(&args, &[("RPCGUARD_DATABASE_URL", url.as_str())]);
    let new = first_token_not_of(&b, &kid_of(&old), SWITCH_WITHIN).await;
    assert_eq!(
        jsonwebtoken::decode_header(&new).expect("header").alg,
        Algorithm::RS256
    );
    assert_eq!(kid_of(&new), kid_of(&token_from(&a, "alice").await));
    for server in [&a, &b] {
        caller(server, &old)
            .await
            .expect("the HS256 token from before");
        caller(server, &new).await.expect("the RS256 token");
    }
    assert_eq!(jwks(&a).await, jwks(&b).await);
}

/// The first start on PostgreSQL imports what the instance used before, so
/// that its tokens keep verifying: its data dir's `keys.json` (and a second
/// instance with an empty data dir then uses the same set); on another
/// database, the secret instances were given (`RPCGUARD_SECRET`), whose
/// tokens have no `kid`, even when `--jwt-alg` moves the set on to EdDSA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn the_first_start_imports_keys_json_or_the_given_secret() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let ttl = Duration::from_secs(rpcguard_accounts::config::DEFAULT_TOKEN_TTL_SECS);
    // keys.json of a SQLite server that was rotated once (ES256 -> EdDSA).
    let dir_a = tempfile::tempdir().expect("dir");
    rpcguard_accounts::keys::open_key_set(dir_a.path(), Some(KeyAlg::ES256), ttl, &Clock::System)
        .expect("keys.json");
    let file = rpcguard_accounts::keys::rotate_key_set(
        dir_a.path(),
        Some(KeyAlg::EdDSA),
        ttl,
        &Clock::System,
    )
    .expect("rotate");
    let dir_b = tempfile::tempdir().expect("dir");
    let env = [("RPCGUARD_DATABASE_URL", url.as_str())];
    let a = ServerProcess::start(&["--data-dir", &dir_a.path().display().to_string()], &env);
    assert_eq!(database_key_set(&url), file, "keys.json imported as it was");
    let b = ServerProcess::start(&["--data-dir", &dir_b.path().display().to_string()], &env);
    assert!(!dir_b.path().join("keys.json").exists());
    sign_up_alice(&a).await;
    let token = token_from(&b, "alice").await;
    assert_eq!(kid_of(&token), file.signing().expect("signing").kid);
    let real = token_claims(&token);
    // A token of the file's retired ES256 key, issued before the move.
    let retired = &file.keys[0];
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(retired.kid.clone());
    let before = forged(
        &real,
        &header,
        &encoding_key(retired.alg, &retired.material().expect("material")),
    );
    for server in [&a, &b] {
        caller(server, &before)
            .await
            .expect("a token of keys.json's retired key");
        caller(server, &token)
            .await
            .expect("a token of the imported signing key");
    }

    // Instances that shared RPCGUARD_SECRET: its tokens had no kid.
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    const SECRET: &str = "a-shared-signing-key-of-at-least-32-bytes!";
    let dir = tempfile::tempdir().expect("dir");
    let server = ServerProcess::start(
        &[
            "--data-dir",
            &dir.path().display().to_string(),
            "--jwt-alg",
            "EdDSA",
        ],
        &[
            ("RPCGUARD_DATABASE_URL", url.as_str()),
            ("RPCGUARD_SECRET", SECRET),
        ],
    );
    let set = database_key_set(&url);
    assert_eq!(set.keys.len(), 2, "{set:?}");
    assert!(set.keys[0].legacy && set.keys[0].retired.is_some());
    assert_eq!(set.keys[0].material().expect("material"), SECRET.as_bytes());
    assert_eq!(set.signing().expect("signing").alg, KeyAlg::EdDSA);
    sign_up_alice(&server).await;
    let token = token_from(&server, "alice").await;
    let real = token_claims(&token);
    let old = forged(
        &real,
        &Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    caller(&server, &old)
        .await
        .expect("a token of the shared secret, no kid");
    caller(&server, &token).await.expect("an EdDSA token");
}

/// The CLI never makes a key set in a database that has none (a typo in
/// the URL must not start a set the servers would not use).
#[test]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
fn the_cli_needs_a_set_in_the_database() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(url) = runtime.block_on(fresh_postgres_database()) else {
        return;
    };
    for args in [&["list"][..], &["rotate"][..]] {
        let (ok, said) = rpcguard_key(&url, 900, args);
        assert!(!ok, "{said}");
        assert!(said.contains("no key set in the database"), "{said}");
    }
}

/// Many first starts at once on an empty (migrated) database, closer
/// together than whole processes can start: every one gets the same set of
/// one key (the advisory lock makes the first one's set the others').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn concurrent_first_opens_make_one_set() {
    use rpcguard_accounts::keys::{DbKeySet, Import};
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let ttl = Duration::from_secs(60);
    let mut dbs = Vec::new();
    for _ in 0..8 {
        dbs.push(DbKeySet::connect(&url).await.expect("connect"));
    }
    let dir = tempfile::tempdir().expect("dir");
    let barrier = tokio::sync::Barrier::new(dbs.len());
    let opened = futures::future::join_all(dbs.iter().map(|db| {
        let (barrier, dir) = (&barrier, dir.path());
        async move {
            barrier.wait().await;
            let import = Import {
                given_secret: None,
                data_dir: dir,
            };
            db.open(Some(KeyAlg::ES256), ttl, import).await
        }
    }))
    .await;
    let set = database_key_set(&url);
    assert_eq!(set.keys.len(), 1, "{set:?}");
    for result in opened {
        assert_eq!(result.expect("every start succeeds"), set);
    }
}
