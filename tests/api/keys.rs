//! Issue 12, keys: the key set with `kid`s, `--jwt-alg`, `rpcguard key
//! rotate` seen by a running server, the grace of retired keys, the upgrade
//! from `secret.key`, `GET /.well-known/jwks.json`, and forged headers.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::helpers::*;
use rpcguard_accounts::keys::{KeyAlg, RELOAD_SLACK};

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("every token carries a kid")
}

fn alg_of(token: &str) -> Algorithm {
    jsonwebtoken::decode_header(token).expect("header").alg
}

/// Runs `rpcguard key ARGS --data-dir DIR --token-ttl TTL`; its stdout.
fn rpcguard_key(app: &TestApp, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .arg("key")
        .args(args)
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .arg("--token-ttl")
        .arg(app.config.token_ttl.as_secs().to_string())
        .env_remove("RPCGUARD_DATA_DIR")
        .env_remove("RPCGUARD_TOKEN_TTL")
        .output()
        .expect("run rpcguard key");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rpcguard key {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn sign_in(app: &TestApp, name: &str) -> String {
    app.sign_in(name, PASSWORD).await.expect("sign_in")["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// A token for alice with the account and session of `real` (a real
/// token's claims), valid for ten minutes from now (the system clock),
/// signed with `key` under `header`.
fn forged(real: &Value, header: &Header, key: &EncodingKey) -> String {
    let now = rpcguard_accounts::clock::unix_now().expect("clock");
    forged_at(now, real, header, key)
}

/// [`forged`], issued at `now` (an app's time).
fn forged_at(now: u64, real: &Value, header: &Header, key: &EncodingKey) -> String {
    let claims = claims_at(now, "alice", |c| {
        c.insert("uid".into(), real["uid"].clone());
        c.insert("sid".into(), real["sid"].clone());
    });
    jsonwebtoken::encode(header, &claims, key).expect("encode")
}

async fn jwks_of(app: &TestApp) -> (reqwest::Response, Value) {
    let response = app
        .http
        .get(format!("{}.well-known/jwks.json", app.url))
        .send()
        .await
        .expect("GET jwks");
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("JSON");
    let again = app
        .http
        .get(format!("{}.well-known/jwks.json", app.url))
        .header("if-none-match", headers["etag"].to_str().expect("etag"))
        .send()
        .await
        .expect("GET jwks");
    assert_eq!(again.status(), 304);
    let fresh = app
        .http
        .get(format!("{}.well-known/jwks.json", app.url))
        .send()
        .await
        .expect("GET jwks");
    (fresh, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_with_the_cli_reaches_the_running_server_and_old_keys_drop_out() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| {
        c.token_ttl = Duration::from_secs(3);
        c.jwt_alg = Some(KeyAlg::EdDSA);
        c.keys_check_every = Duration::from_millis(200);
        manual_clock(c);
    })
    .await
    .expect("sqlite");
    let old = app.signed_in("alice").await;
    let uid = token_claims(&old);
    let old_kid = kid_of(&old);
    assert!(old_kid.starts_with("eddsa-"), "{old_kid}");
    assert_eq!(alg_of(&old), Algorithm::EdDSA);
    let (_, old_material) = signing_key(app.data_dir.path());

    let out = rpcguard_key(&app, &["rotate", "--alg", "ES256"]);
    assert!(out.contains("new signing key: es256-"), "{out}");
    // The token from before the rotation keeps working.
    app.call(Some(&old), "get_caller", json!({}))
        .await
        .expect("a token of the previous key");

    // The running server signs with the new key within seconds.
    let started = Instant::now();
    let new = loop {
        let token = sign_in(&app, "alice").await;
        if kid_of(&token) != old_kid {
            break token;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "rotation not seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(kid_of(&new).starts_with("es256-"));
    assert_eq!(alg_of(&new), Algorithm::ES256);
    app.call(Some(&new), "get_caller", json!({}))
        .await
        .expect("a token of the new key");

    let listed = rpcguard_key(&app, &["list"]);
    assert!(
        listed.contains(&format!("{old_kid}\tEdDSA\tverifying until")),
        "{listed}"
    );
    assert!(listed.contains("\tES256\tsigning"), "{listed}");

    // Within its grace the old key still verifies what it signed; after it
    // (TTL + reload slack after the rotation, on the server's clock) it
    // verifies nothing, even a token whose own `exp` is still ahead.
    let set = rpcguard_accounts::keys::file::read_key_set(
        &app.data_dir
            .path()
            .join(rpcguard_accounts::keys::KEYS_FILE_NAME),
    )
    .expect("key set");
    let retired = set
        .keys
        .iter()
        .find(|key| key.kid == old_kid)
        .expect("old key");
    let retired_at = retired.retired.expect("retired by the rotation");
    let grace_end = retired_at + (app.config.token_ttl + RELOAD_SLACK).as_secs();
    assert_eq!(
        retired.verifies_until(app.config.token_ttl),
        Some(grace_end)
    );
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(old_kid.clone());
    let old_key = EncodingKey::from_ed_der(&old_material);
    app.clock().set(grace_end);
    app.call(
        Some(&forged_at(app.now(), &uid, &header, &old_key)),
        "get_caller",
        json!({}),
    )
    .await
    .expect("within the grace");
    app.clock().advance(Duration::from_secs(1));
    assert_unauthenticated(
        app.call(
            Some(&forged_at(app.now(), &uid, &header, &old_key)),
            "get_caller",
            json!({}),
        )
        .await,
        "invalid_token",
    );
    // The tokens it really signed expired before its grace ended (the
    // answer is the same whether the server remembers the token or not).
    assert_unauthenticated(
        app.call(Some(&old), "get_caller", json!({})).await,
        "expired_token",
    );
    // The next start removes it from the file (at the server's time: the
    // command line's clock has not reached the end of the grace). Without
    // `--jwt-alg EdDSA`, which would rotate back.
    let app = app.restart_with(|c| c.jwt_alg = None).await;
    let listed = rpcguard_key(&app, &["list"]);
    assert!(!listed.contains(&old_kid), "{listed}");
    assert!(listed.contains("\tES256\tsigning"), "{listed}");
    let newest = sign_in(&app, "alice").await;
    assert_eq!(kid_of(&newest), kid_of(&new));
    app.call(Some(&newest), "get_caller", json!({}))
        .await
        .expect("a token of the signing key, after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_public_keys_only_with_cache_control() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| c.jwt_alg = Some(KeyAlg::RS256))
        .await
        .expect("sqlite");
    let token = app.signed_in("alice").await;
    let (response, body) = jwks_of(&app).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let keys = body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{body}");
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], kid_of(&token).as_str());
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(jwk.get(private).is_none(), "{private} in {jwk}");
    }
    let (_, material) = signing_key(app.data_dir.path());
    let text = body.to_string();
    assert!(!text.contains(&URL_SAFE_NO_PAD.encode(&material)[..32]));

    // The token verifies with the published key alone.
    let set: JwkSet = serde_json::from_value(body).expect("a JWK set");
    let key = DecodingKey::from_jwk(set.find(&kid_of(&token)).expect("kid")).expect("key");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["rpcguard"]);
    validation.set_issuer(&["rpcguard"]);
    jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("verifies with the JWKS");

    // HEAD answers the headers; other methods 405.
    let url = format!("{}.well-known/jwks.json", app.url);
    let head = app.http.head(&url).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    let post = app.http.post(&url).send().await.expect("POST");
    assert_eq!(post.status(), 405);

    // An HS256 set publishes nothing.
    let hs = TestApp::spawn().await;
    let (response, body) = jwks_of(&hs).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body, json!({"keys": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_headers_are_refused() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| c.jwt_alg = Some(KeyAlg::ES256))
        .await
        .expect("sqlite");
    let token = app.signed_in("alice").await;
    let uid = token_claims(&token);
    let kid = kid_of(&token);
    let (_, body) = jwks_of(&app).await;
    let jwk = body["keys"][0].clone();
    let mut refused = Vec::new();

    // alg: none, with and without a signature part.
    let payload = token.split('.').nth(1).expect("payload");
    for alg in ["none", "None"] {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": kid}).to_string());
        refused.push(format!("{header}.{payload}."));
    }
    // Algorithm confusion: HS256 keyed with the public key, in every form.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    for secret in [
        body.to_string(),
        jwk.to_string(),
        jwk["x"].as_str().expect("x").to_owned(),
    ] {
        refused.push(forged(
            &uid,
            &hs,
            &EncodingKey::from_secret(secret.as_bytes()),
        ));
    }
    // An unknown kid; no kid at all (only a legacy key verifies those).
    let mut unknown = Header::new(Algorithm::ES256);
    unknown.kid = Some("es256-000000000000".to_owned());
    let theirs = rpcguard_accounts::keys::KeySet::generate(KeyAlg::ES256, 0).expect("key");
    let their_key = EncodingKey::from_ec_der(&theirs.keys[0].material().expect("material"));
    refused.push(forged(&uid, &unknown, &their_key));
    refused.push(forged(&uid, &Header::new(Algorithm::ES256), &their_key));
    // Our kid, the attacker's key offered by jku / x5u / an embedded jwk.
    let mut pointing = Header::new(Algorithm::ES256);
    pointing.kid = Some(kid.clone());
    pointing.jku = Some("http://127.0.0.1:9/jwks.json".to_owned());
    pointing.x5u = Some("http://127.0.0.1:9/cert.pem".to_owned());
    pointing.jwk =
        Some(jsonwebtoken::jwk::Jwk::from_encoding_key(&their_key, Algorithm::ES256).expect("jwk"));
    refused.push(forged(&uid, &pointing, &their_key));

    for forgery in refused {
        assert_unauthenticated(
            app.call(Some(&forgery), "get_caller", json!({})).await,
            "invalid_token",
        );
    }
    app.call(Some(&token), "get_caller", json!({}))
        .await
        .expect("the real token still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_before_the_upgrade_keep_verifying() {
    use rpcguard_accounts::config::{load_secret, SecretSource};
    // A data dir as rpcguard left it before key sets: secret.key only.
    let dir = tempfile::tempdir().expect("dir");
    let secret = load_secret(&SecretSource::DataDir, dir.path()).expect("secret.key");
    let mut config = test_config(dir.path());
    config.jwt_alg = Some(KeyAlg::EdDSA);
    let app = TestApp::start(config, dir).await;
    let token = app.signed_in("alice").await;
    assert_eq!(alg_of(&token), Algorithm::EdDSA);
    let uid = token_claims(&token);
    // An old token: HS256 under secret.key, no kid.
    let old = forged(
        &uid,
        &Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(&secret),
    );
    app.call(Some(&old), "get_caller", json!({}))
        .await
        .expect("a token from before the upgrade");
    let listed = rpcguard_key(&app, &["list"]);
    assert!(listed.contains("\tHS256\tverifying until"), "{listed}");
    assert!(listed.contains("\tEdDSA\tsigning"), "{listed}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(app.data_dir.path().join("keys.json"))
        .expect("keys.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_given_secret_is_hs256_only() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().display().to_string();
    let stderr = serve_refused(
        &["--data-dir", &data_dir, "--jwt-alg", "EdDSA"],
        &[(
            "RPCGUARD_SECRET",
            "a-given-secret-of-at-least-32-bytes-0123",
        )],
    );
    assert!(
        stderr.contains("--jwt-alg EdDSA needs the key set"),
        "{stderr}"
    );
    let stderr = serve_refused(&["--data-dir", &data_dir, "--jwt-alg", "HS512"], &[]);
    assert!(stderr.contains("HS512"), "{stderr}");
}

/// A server whose JWKS holds an EdDSA, an ES256 and an RS256 key, and a
/// token signed by each (rotated through the CLI, seen by the server).
async fn three_algorithm_tokens() -> (TestApp, Vec<String>) {
    let app = TestApp::spawn_with(StoreKind::Sqlite, |c| {
        c.jwt_alg = Some(KeyAlg::EdDSA);
        c.keys_check_every = Duration::from_millis(100);
    })
    .await
    .expect("sqlite");
    let mut tokens = vec![app.signed_in("alice").await];
    for alg in ["ES256", "RS256"] {
        rpcguard_key(&app, &["rotate", "--alg", alg]);
        let started = Instant::now();
        loop {
            let token = sign_in(&app, "alice").await;
            if alg_of(&token) == alg.parse().expect("alg") {
                tokens.push(token);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "rotation not seen"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (app, tokens)
}

/// Runs `program ARGS... JWKS_URL TOKENS...`; asserts success and `expect`
/// in its output.
async fn verifier(mut command: Command, app: &TestApp, tokens: Vec<String>, expect: &str) {
    command
        .arg(format!("{}.well-known/jwks.json", app.url))
        .args(tokens);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("the verifier runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verifier failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(expect), "{stdout}");
    for alg in ["EdDSA", "ES256", "RS256"] {
        assert!(
            stdout.contains(&format!("{alg} token of alice verified")),
            "{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_pyjwt,
    ignore = "PyJWT: run `pip install pyjwt cryptography`, then `touch build.rs`"
)]
async fn pyjwt_verifies_eddsa_es256_and_rs256_tokens_with_the_jwks() {
    let (app, tokens) = three_algorithm_tokens().await;
    let mut python = Command::new("python3");
    python.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/jwks_verify.py"
    ));
    verifier(
        python,
        &app,
        tokens,
        "pyjwt: all checks passed (ES256, EdDSA, RS256)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_jose,
    ignore = "jose: run `npm ci --prefix tests/clients/jwks`"
)]
async fn jose_verifies_eddsa_es256_and_rs256_tokens_with_the_jwks() {
    let (app, tokens) = three_algorithm_tokens().await;
    let mut node = Command::new("node");
    node.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/jwks"))
        .arg("verify.mjs");
    verifier(
        node,
        &app,
        tokens,
        "jose: all checks passed (ES256, EdDSA, RS256)",
    )
    .await;
}
