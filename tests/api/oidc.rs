//! Issue 12, external issuers: tokens of an identity provider (a fake
//! Keycloak on loopback, [`crate::idp`]) accepted beside the server's own,
//! with their scopes mapped from a claim; everything forged, misdirected or
//! stale refused with the contract's reasons; the JWKS fetched again only
//! when it must, and never from where a token points.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use rpcguard::security::oidc::{JwksSource, OidcConfig};
use rpcguard_accounts::keys::KeyAlg;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::idp::{sign_raw, FakeIdp, IdpKey, Trap, AUDIENCE};

/// The provider's configuration as a Keycloak deployment would give it:
/// realm roles as scopes.
fn keycloak(idp: &FakeIdp) -> OidcConfig {
    let mut config = OidcConfig::new(
        idp.issuer.clone(),
        AUDIENCE,
        JwksSource::parse(&idp.jwks_url),
    );
    config.scopes_claim = "realm_access.roles".to_owned();
    config
}

/// A server (SQLite) accepting `oidc`'s tokens.
async fn server_for(oidc: OidcConfig) -> TestApp {
    TestApp::spawn_with(StoreKind::Sqlite, |c| c.oidc = Some(oidc))
        .await
        .expect("sqlite")
}

async fn get_caller(
    app: &TestApp,
    token: &str,
) -> Result<Value, jsonrpsee::types::ErrorObjectOwned> {
    app.call(Some(token), "get_caller", json!({})).await
}

/// A token with this header (as JSON) and these claims, signed with HMAC
/// SHA-256 keyed by `secret`.
fn hmac_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_are_accepted_with_their_roles_beside_our_own() {
    let idp = FakeIdp::start().await;
    let app = server_for(keycloak(&idp)).await;
    assert_eq!(idp.hits(), 1, "the JWKS is fetched once at start");

    // RSA and EC tokens, realm roles as scopes.
    let claims = idp.claims("3f1c0a4e-kc-carol", &["scope1", "offline_access"], |_| {});
    for token in [idp.rsa_token(&claims), idp.ec_token(&claims)] {
        let user = get_caller(&app, &token).await.expect("get_caller");
        assert_eq!(user["username"], "3f1c0a4e-kc-carol");
        assert_eq!(
            user["scopes"],
            json!({ "Bearer": ["offline_access", "scope1"] })
        );
        assert!(user["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        let allowed = app.call(Some(&token), "require_scopes", json!({})).await;
        assert_eq!(allowed.expect("scope1 held"), json!(true));
        // Over a WebSocket session too (the token at the upgrade).
        let ws = app.ws(Some(&token)).await;
        assert_eq!(
            call(&ws, "get_caller", json!({})).await.expect("ws")["username"],
            "3f1c0a4e-kc-carol"
        );
    }
    // Without the role: authenticated, but -32099 with the missing scope.
    let plain = idp.rsa_token(&idp.claims("kc-dave", &["offline_access"], |_| {}));
    let denied = app.call(Some(&plain), "require_scopes", json!({})).await;
    let err = assert_error(denied, -32099, "Permission error");
    let data: Value = serde_json::from_str(err.data().expect("data").get()).expect("json");
    assert_eq!(data, json!({ "missing_scopes": { "Bearer": ["scope1"] } }));

    // The server's own tokens keep working beside them.
    let own = app.signed_in("alice").await;
    assert_eq!(
        get_caller(&app, &own).await.expect("own")["username"],
        "alice"
    );

    // An external `sub` equal to a local username is not that user: the
    // caller is the token's, and the session methods refuse it.
    app.grant("alice", "scope1").await;
    let namesake = idp.rsa_token(&idp.claims("alice", &[], |_| {}));
    let user = get_caller(&app, &namesake).await.expect("external alice");
    assert_eq!(user["scopes"], json!({ "Bearer": [] }));
    let denied = app.call(Some(&namesake), "require_scopes", json!({})).await;
    assert_error(denied, -32099, "Permission error");
    let local = get_caller(&app, &own).await.expect("own");
    assert_eq!(local["scopes"], json!({ "Bearer": ["scope1"] }));
    let everywhere = app
        .call(Some(&namesake), "sign_out", json!({ "everywhere": true }))
        .await;
    assert_unauthenticated(everywhere, "invalid_token");
    assert!(
        get_caller(&app, &own).await.is_ok(),
        "local alice still signed in"
    );
    assert_eq!(idp.hits(), 1, "known kids never fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_binds_a_provider_token_to_a_websocket_session() {
    let idp = FakeIdp::start().await;
    let app = server_for(keycloak(&idp)).await;
    let ws = app.ws(None).await;
    assert_unauthenticated(call(&ws, "get_caller", json!({})).await, "missing_token");
    let token = idp.ec_token(&idp.claims("kc-lee", &["scope1"], |_| {}));
    let user = call(&ws, "authenticate", json!({ "access_token": token }))
        .await
        .expect("authenticate");
    assert_eq!(user["username"], "kc-lee");
    assert_eq!(user["scopes"], json!({ "Bearer": ["scope1"] }));
    let caller = call(&ws, "get_caller", json!({})).await.expect("bound");
    assert_eq!(caller, user);
    assert_eq!(
        call(&ws, "require_scopes", json!({}))
            .await
            .expect("scope1"),
        json!(true)
    );
    // A refused token binds nothing: the session keeps its caller.
    let now = rpcguard_accounts::clock::unix_now().expect("clock");
    let expired = idp.rsa_token(&idp.claims("kc-mallory", &["scope1"], |c| {
        c.insert("exp".into(), json!(now - 10));
    }));
    assert_unauthenticated(
        call(&ws, "authenticate", json!({ "access_token": expired })).await,
        "expired_token",
    );
    assert_eq!(
        call(&ws, "get_caller", json!({}))
            .await
            .expect("still bound")["username"],
        "kc-lee"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_claim_can_be_a_space_separated_string() {
    let idp = FakeIdp::start().await;
    let mut config = keycloak(&idp);
    config.scopes_claim = "scope".to_owned();
    let app = server_for(config).await;
    let token = idp.ec_token(&idp.claims("kc-erin", &["admin"], |c| {
        c.insert("scope".into(), json!("openid scope1 reports"));
    }));
    let user = get_caller(&app, &token).await.expect("get_caller");
    assert_eq!(
        user["scopes"],
        json!({ "Bearer": ["openid", "reports", "scope1"] })
    );
    assert_eq!(
        app.call(Some(&token), "require_scopes", json!({}))
            .await
            .expect("allowed"),
        json!(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expired_and_forged_tokens_are_refused() {
    // The provider's JWKS also lists a symmetric key: it must be ignored.
    let oct_secret = b"a-symmetric-key-in-a-public-set!";
    let oct = json!({ "kty": "oct", "kid": "kc-hmac", "alg": "HS256", "use": "sig",
                      "k": URL_SAFE_NO_PAD.encode(oct_secret) });
    let idp = FakeIdp::start_with(vec![oct]).await;
    let app = server_for(keycloak(&idp)).await;
    let trap = Trap::start().await;
    let good = idp.claims("kc-frank", &["scope1"], |_| {});
    assert!(get_caller(&app, &idp.rsa_token(&good)).await.is_ok());

    let refused =
        |edit: fn(&mut serde_json::Map<String, Value>)| idp.claims("kc-frank", &["scope1"], edit);
    // Another issuer (goes to the local verifier), another audience.
    let other_iss = refused(|c| {
        c.insert("iss".into(), json!("http://127.0.0.1:1/realms/other"));
    });
    assert_unauthenticated(
        get_caller(&app, &idp.rsa_token(&other_iss)).await,
        "invalid_token",
    );
    let other_aud = refused(|c| {
        c.insert("aud".into(), json!(["account", "another-client"]));
    });
    assert_unauthenticated(
        get_caller(&app, &idp.rsa_token(&other_aud)).await,
        "invalid_token",
    );
    let aud_string = refused(|c| {
        c.insert("aud".into(), json!(AUDIENCE));
    });
    assert!(
        get_caller(&app, &idp.ec_token(&aud_string)).await.is_ok(),
        "aud as a string"
    );
    // Expired; not yet valid; no exp; no sub.
    let now = rpcguard_accounts::clock::unix_now().expect("clock");
    let expired = idp.claims("kc-frank", &[], |c| {
        c.insert("iat".into(), json!(now - 600));
        c.insert("exp".into(), json!(now - 300));
    });
    assert_unauthenticated(
        get_caller(&app, &idp.rsa_token(&expired)).await,
        "expired_token",
    );
    let early = idp.claims("kc-frank", &[], |c| {
        c.insert("nbf".into(), json!(now + 300));
    });
    assert_unauthenticated(
        get_caller(&app, &idp.ec_token(&early)).await,
        "invalid_token",
    );
    // Keycloak's ID token: same key, issuer and audience, not an access token.
    let id_token = idp.claims("kc-frank", &["scope1"], |c| {
        c.insert("typ".into(), json!("ID"));
        c.insert("nonce".into(), json!("n-0S6_WzA2Mj"));
    });
    assert_unauthenticated(
        get_caller(&app, &idp.rsa_token(&id_token)).await,
        "invalid_token",
    );
    for claim in ["exp", "sub", "aud"] {
        let without = idp.claims("kc-frank", &[], |c| {
            c.remove(claim);
        });
        assert_unauthenticated(
            get_caller(&app, &idp.rsa_token(&without)).await,
            "invalid_token",
        );
    }
    let hits = idp.hits();

    // Algorithm confusion: HS256 keyed with the provider's public key (in
    // every form an attacker might feed an HMAC), `alg: none`.
    let (kid, public) = idp.rsa_public();
    for secret in [
        public.to_string(),
        public["n"].as_str().expect("n").to_owned(),
        json!({ "keys": [public.clone()] }).to_string(),
    ] {
        let header = json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
        let token = hmac_token(&header, &good, secret.as_bytes());
        assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
    }
    for alg in ["none", "None", "NONE"] {
        let header = URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "kid": kid }).to_string());
        let payload = URL_SAFE_NO_PAD.encode(good.to_string());
        for tail in ["", "c2ln"] {
            let token = format!("{header}.{payload}.{tail}");
            assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
        }
    }
    assert_eq!(idp.hits(), hits, "a known kid fetches nothing");
    // The symmetric key of the set is never used, whoever read the set:
    // an HMAC algorithm is refused before its kid is even looked up (no
    // fetch).
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": "kc-hmac" });
    let token = hmac_token(&header, &good, oct_secret);
    assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
    assert_eq!(idp.hits(), hits, "an HMAC token fetches nothing");

    // A key of the attacker's, offered through jku / x5u / an embedded
    // jwk: never fetched, never used, whatever the kid.
    let theirs = IdpKey::generate(KeyAlg::RS256);
    for header_kid in [kid.clone(), theirs.kid.clone()] {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(header_kid);
        header.jku = Some(format!("{}jwks.json", trap.url));
        header.x5u = Some(format!("{}cert.pem", trap.url));
        header.jwk = serde_json::from_value(theirs.jwk.clone()).ok();
        let token = jsonwebtoken::encode(&header, &good, &theirs.encoding).expect("encode");
        assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
    }
    assert_eq!(
        trap.connections(),
        0,
        "a URL from a token header was fetched"
    );
    // The attacker's kid is unknown: exactly one fetch for it.
    assert_eq!(idp.hits(), hits + 1, "exactly one fetch for an unknown kid");

    // A correctly signed token of a key the provider never published.
    let stranger = theirs.sign(&good);
    assert_unauthenticated(get_caller(&app, &stranger).await, "invalid_token");
    assert_eq!(idp.hits(), hits + 1, "within the cooldown: no second fetch");
    assert!(get_caller(&app, &idp.rsa_token(&good)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_fetch_once_per_cooldown_and_share_the_fetch() {
    let idp = FakeIdp::start().await;
    let app = server_for(keycloak(&idp)).await;
    assert_eq!(idp.hits(), 1);
    let claims = idp.claims("kc-gina", &[], |_| {});
    let signer = IdpKey::generate(KeyAlg::ES256);
    // A flood of made-up kids, all at once.
    let calls = (0..40).map(|i| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(format!("made-up-{i}"));
        let token = jsonwebtoken::encode(&header, &claims, &signer.encoding).expect("encode");
        let client = app.client(Some(&token));
        async move { call(&client, "get_caller", json!({})).await }
    });
    for answer in futures::future::join_all(calls).await {
        assert_unauthenticated(answer, "invalid_token");
    }
    assert_eq!(idp.hits(), 2, "one fetch for the whole flood");
    // The provider's own tokens verified throughout.
    assert!(get_caller(&app, &idp.rsa_token(&claims)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_keeps_the_keys_and_back_with_a_rotated_key_one_fetch() {
    let mut idp = FakeIdp::start().await;
    let mut config = keycloak(&idp);
    config.cooldown = Duration::from_millis(500);
    let app = server_for(config).await;
    let before = idp.rsa_token(&idp.claims("kc-hank", &["scope1"], |_| {}));
    assert!(get_caller(&app, &before).await.is_ok());

    idp.stop().await;
    // Down: its tokens verify with the cached keys, fresh ones too.
    assert!(get_caller(&app, &before).await.is_ok());
    let fresh = idp.ec_token(&idp.claims("kc-hank", &[], |_| {}));
    assert!(get_caller(&app, &fresh).await.is_ok());
    // A token of a new key cannot be checked now: refused, keys kept.
    idp.rotate();
    let rotated = idp.rsa_token(&idp.claims("kc-hank", &["scope1"], |_| {}));
    tokio::time::sleep(Duration::from_millis(600)).await; // past the cooldown
    assert_unauthenticated(get_caller(&app, &rotated).await, "invalid_token");
    assert!(
        get_caller(&app, &before).await.is_ok(),
        "the last good set stays"
    );
    assert_eq!(idp.hits(), 1);

    // Back, with the rotated keys: one fetch, then the new tokens verify.
    idp.restart().await;
    tokio::time::sleep(Duration::from_millis(600)).await; // past the cooldown
    let user = get_caller(&app, &rotated).await.expect("rotated key found");
    assert_eq!(user["scopes"], json!({ "Bearer": ["scope1"] }));
    assert_eq!(idp.hits(), 2, "exactly one fetch");
    assert!(
        get_caller(&app, &idp.ec_token(&idp.claims("kc-hank", &[], |_| {})))
            .await
            .is_ok()
    );
    assert_eq!(idp.hits(), 2, "the EC key came with the same fetch");
    // The provider withdrew the old keys: their tokens stop.
    assert_unauthenticated(get_caller(&app, &before).await, "invalid_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_names_the_external_issuer() {
    let idp = FakeIdp::start().await;
    let app = server_for(keycloak(&idp)).await;
    let document = app
        .call(None, "rpc.discover", json!({}))
        .await
        .expect("rpc.discover");
    let bearer = &document["components"]["x-securitySchemes"]["Bearer"];
    // The server itself first (its JWKS under its public URL), then the
    // external issuer.
    let ours = json!({
        "issuer": "rpcguard",
        "audience": "rpcguard",
        "jwks_uri": format!("{}.well-known/jwks.json", app.config.server.openrpc_info.server_url),
        "scopes_claim": "scope",
    });
    assert_eq!(
        bearer["x-issuers"],
        json!([ours, {
            "issuer": idp.issuer,
            "audience": AUDIENCE,
            "jwks_uri": idp.jwks_url,
            "scopes_claim": "realm_access.roles",
            "algorithms": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"],
        }])
    );
    let description = bearer["description"].as_str().expect("description");
    assert!(
        description.contains("`sign_in` (or `refresh`) answers"),
        "{description}"
    );
    assert!(
        description.contains("identity providers in `x-issuers`"),
        "{description}"
    );
    // The server without one names itself only, under its public URL.
    let plain = TestApp::spawn_with(StoreKind::Sqlite, |c| {
        c.server.openrpc_info.server_url = "https://rpc.example/api/".to_owned()
    })
    .await
    .expect("sqlite");
    let document = plain
        .call(None, "rpc.discover", json!({}))
        .await
        .expect("discover");
    let bearer = &document["components"]["x-securitySchemes"]["Bearer"];
    assert_eq!(
        bearer["x-issuers"][0]["jwks_uri"],
        "https://rpc.example/api/.well-known/jwks.json"
    );
    assert_eq!(bearer["x-issuers"].as_array().map(Vec::len), Some(1));
    let description = bearer["description"].as_str().expect("description");
    assert!(!description.contains("identity providers"), "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_file_works_like_a_url() {
    let idp = FakeIdp::start().await;
    let jwks: Value = reqwest::get(&idp.jwks_url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("idp-jwks.json");
    std::fs::write(&file, jwks.to_string()).expect("write");
    let mut config = keycloak(&idp);
    config.jwks = JwksSource::File(file.clone());
    let app = server_for(config).await;
    let token = idp.ec_token(&idp.claims("kc-ivan", &["scope1"], |_| {}));
    assert_eq!(
        app.call(Some(&token), "require_scopes", json!({}))
            .await
            .expect("allowed"),
        json!(true)
    );
    // A file that cannot be read is a configuration error at start.
    let mut missing = keycloak(&idp);
    missing.jwks = JwksSource::File(dir.path().join("nope.json"));
    let mut config = test_config(dir.path());
    config.oidc = Some(missing);
    let err = rpcguard_accounts::app::reference(&config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("nope.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_flags_and_environment_configure_the_issuer() {
    let idp = FakeIdp::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let server = ServerProcess::start(
        &[
            "--data-dir",
            data_dir,
            "--oidc-issuer",
            &idp.issuer,
            "--oidc-audience",
            AUDIENCE,
            "--oidc-jwks",
            &idp.jwks_url,
            "--oidc-scopes-claim",
            "realm_access.roles",
        ],
        &[],
    );
    let token = idp.rsa_token(&idp.claims("kc-judy", &["scope1"], |_| {}));
    let client = server.client(Some(&token));
    assert_eq!(
        call(&client, "get_caller", json!({}))
            .await
            .expect("get_caller")["scopes"],
        json!({ "Bearer": ["scope1"] })
    );
    assert_eq!(
        call(&client, "require_scopes", json!({}))
            .await
            .expect("allowed"),
        json!(true)
    );
    drop(server);

    // The same from the environment, with the `scope` claim by default.
    let dir = tempfile::tempdir().expect("dir");
    let server = ServerProcess::start(
        &["--data-dir", dir.path().to_str().expect("utf-8 path")],
        &[
            ("RPCGUARD_OIDC_ISSUER", idp.issuer.as_str()),
            ("RPCGUARD_OIDC_AUDIENCE", AUDIENCE),
            ("RPCGUARD_OIDC_JWKS", idp.jwks_url.as_str()),
        ],
    );
    let client = server.client(Some(&token));
    assert_eq!(
        call(&client, "get_caller", json!({}))
            .await
            .expect("get_caller")["scopes"],
        json!({ "Bearer": ["email", "openid", "profile"] })
    );
    assert!(!server.log().contains(&token), "a token in the log");

    // Half a configuration, or our own issuer, stops the server.
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let half = serve_refused(&["--data-dir", data_dir, "--oidc-issuer", &idp.issuer], &[]);
    assert!(half.contains("--oidc-audience"), "{half}");
    let ours = serve_refused(
        &[
            "--data-dir",
            data_dir,
            "--oidc-issuer",
            "rpcguard",
            "--oidc-audience",
            AUDIENCE,
            "--oidc-jwks",
            &idp.jwks_url,
        ],
        &[],
    );
    assert!(ours.contains("own token issuer"), "{ours}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_verifies_in_its_own_algorithm_only() {
    // An RSA key published for PS256 and an Ed25519 key, beside the
    // provider's RS256 and ES256 keys.
    let mut pss = IdpKey::generate(KeyAlg::RS256);
    pss.kid = "kc-pss".to_owned();
    pss.jwk["kid"] = json!("kc-pss");
    pss.jwk["alg"] = json!("PS256");
    let mut ed = IdpKey::generate(KeyAlg::EdDSA);
    ed.kid = "kc-ed".to_owned();
    ed.jwk["kid"] = json!("kc-ed");
    let idp = FakeIdp::start_with(vec![pss.jwk.clone(), ed.jwk.clone()]).await;
    let app = server_for(keycloak(&idp)).await;
    let claims = idp.claims("kc-kim", &["scope1"], |_| {});
    let signed = |key: &IdpKey, alg: Algorithm| {
        let mut header = Header::new(alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).expect("encode")
    };
    assert!(get_caller(&app, &signed(&pss, Algorithm::PS256))
        .await
        .is_ok());
    assert!(get_caller(&app, &signed(&ed, Algorithm::EdDSA))
        .await
        .is_ok());
    // The same RSA key under RS256: not its algorithm.
    assert_unauthenticated(
        get_caller(&app, &signed(&pss, Algorithm::RS256)).await,
        "invalid_token",
    );
    // The provider's RS256 key under PS256 (a valid PSS signature).
    let (rsa_kid, _) = idp.rsa_public();
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some(rsa_kid);
    let pss_with_rs256_key = idp.sign_with_rsa(&header, &claims);
    assert_unauthenticated(get_caller(&app, &pss_with_rs256_key).await, "invalid_token");
    assert_eq!(idp.hits(), 1, "known kids, no fetch");
}

/// `claims` signed with the provider's RSA key under a header of our
/// making (as JSON: any `typ`, `crit`, or `alg` spelling).
fn rsa_token_with_header(idp: &FakeIdp, header: Value, claims: &Value) -> String {
    let (kid, _) = idp.rsa_public();
    let mut header = header;
    header["kid"] = json!(kid);
    idp.sign_raw_with_rsa(&header, claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_are_refused_by_every_signal_even_when_the_audience_is_the_client_id() {
    // The audience is the client id (`rpc`): an ID token of the provider
    // names it in `aud`, signed by the same key for the same issuer.
    let idp = FakeIdp::start().await;
    let app = server_for(keycloak(&idp)).await;
    let now = rpcguard_accounts::clock::unix_now().expect("clock");
    // An access token of a provider that types nothing (no `typ` claim, no
    // header `typ`): accepted, and under every spelling of `at+jwt` and `JWT`.
    let untyped = idp.claims("op-alice", &["scope1"], |c| {
        c.remove("typ");
    });
    for typ in [
        json!("at+jwt"),
        json!("application/AT+JWT"),
        json!("JWT"),
        json!("jwt"),
    ] {
        let token = rsa_token_with_header(&idp, json!({ "alg": "RS256", "typ": typ }), &untyped);
        assert!(get_caller(&app, &token).await.is_ok(), "typ {typ}");
    }
    let no_typ = rsa_token_with_header(&idp, json!({ "alg": "RS256" }), &untyped);
    assert!(get_caller(&app, &no_typ).await.is_ok(), "no typ");

    // ID tokens, untyped or `JWT`: each ID-token-only claim is enough.
    let id_token_claims: Vec<(&str, Value)> = vec![
        ("nonce", json!("n-0S6_WzA2Mj")),
        ("at_hash", json!("77QmUPtjPfzWtF2AnpK9RQ")),
        ("c_hash", json!("LDktKdoQak3Pk0cnXxCltA")),
        ("s_hash", json!("x")),
    ];
    for (claim, value) in &id_token_claims {
        let id_token = idp.claims("op-alice", &["scope1"], |c| {
            c.remove("typ");
            c.insert((*claim).into(), value.clone());
        });
        for header in [
            json!({ "alg": "RS256" }),
            json!({ "alg": "RS256", "typ": "JWT" }),
        ] {
            let token = rsa_token_with_header(&idp, header, &id_token);
            assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
        }
    }
    // `auth_time` with `azp` = the configured audience: issued to this
    // service as a client. The same with `azp` naming another client is an
    // access token that client asked for.
    let to_us = idp.claims("op-alice", &["scope1"], |c| {
        c.remove("typ");
        c.insert("auth_time".into(), json!(now - 30));
        c.insert("azp".into(), json!(AUDIENCE));
    });
    let to_us = rsa_token_with_header(&idp, json!({ "alg": "RS256" }), &to_us);
    assert_unauthenticated(get_caller(&app, &to_us).await, "invalid_token");
    let to_them = idp.claims("op-alice", &["scope1"], |c| {
        c.remove("typ");
        c.insert("auth_time".into(), json!(now - 30));
        c.insert("azp".into(), json!("web-app"));
    });
    let to_them = rsa_token_with_header(&idp, json!({ "alg": "RS256" }), &to_them);
    assert!(get_caller(&app, &to_them).await.is_ok());

    // Other explicit types, and a `typ` that is not a string, in the header
    // or the claim.
    for typ in [
        json!("id_token+jwt"),
        json!("logout+jwt"),
        json!(null),
        json!(1),
    ] {
        let token = rsa_token_with_header(&idp, json!({ "alg": "RS256", "typ": typ }), &untyped);
        assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
    }
    for typ in [json!(null), json!(["Bearer"]), json!(1), json!("ID")] {
        let claims = idp.claims("op-alice", &["scope1"], |c| {
            c.insert("typ".into(), typ.clone());
        });
        let token =
            rsa_token_with_header(&idp, json!({ "alg": "RS256", "typ": "at+jwt" }), &claims);
        assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crit_headers_and_future_iat_are_refused_for_both_kinds_of_token() {
    let idp = FakeIdp::start().await;
    let app = server_for(keycloak(&idp)).await;
    let now = rpcguard_accounts::clock::unix_now().expect("clock");
    let good = idp.claims("op-bob", &["scope1"], |_| {});
    assert!(get_caller(&app, &idp.rsa_token(&good)).await.is_ok());
    for crit in [
        json!({ "alg": "RS256", "typ": "JWT", "crit": ["exp"], "exp": now + 60 }),
        json!({ "alg": "RS256", "crit": [] }),
        json!({ "alg": "RS256", "crit": null }),
    ] {
        let token = rsa_token_with_header(&idp, crit.clone(), &good);
        assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
    }
    // An `iat` in the future: beyond the 60 s skew refused, within it not.
    for (iat, accepted) in [(now + 3600, false), (now + 120, false), (now + 30, true)] {
        let claims = idp.claims("op-bob", &[], |c| {
            c.insert("iat".into(), json!(iat));
        });
        let answer = get_caller(&app, &idp.ec_token(&claims)).await;
        if accepted {
            assert!(answer.is_ok(), "iat now+{}", iat - now);
        } else {
            assert_unauthenticated(answer, "invalid_token");
        }
    }
    let not_a_number = idp.claims("op-bob", &[], |c| {
        c.insert("iat".into(), json!("yesterday"));
    });
    assert_unauthenticated(
        get_caller(&app, &idp.rsa_token(&not_a_number)).await,
        "invalid_token",
    );

    // The server's own tokens: a validly signed one with `crit` is refused.
    let own = app.signed_in("carol").await;
    let mut claims = token_claims(&own);
    claims["jti"] = json!("crit-test");
    let (kid, secret) = app_signing_key(&app);
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": kid, "crit": ["exp"], "exp": 1 });
    let forged = hmac_token(&header, &claims, &secret);
    assert_unauthenticated(get_caller(&app, &forged).await, "invalid_token");
    // The same header without `crit` verifies (the forging is right).
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
    let plain = hmac_token(&header, &claims, &secret);
    assert!(get_caller(&app, &plain).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_is_eddsa_in_the_jwks_and_the_token_header() {
    // RFC 9864's name: `alg: Ed25519` on the key and in the token header.
    let mut ed = IdpKey::generate(KeyAlg::EdDSA);
    ed.kid = "op-ed25519".to_owned();
    ed.jwk["kid"] = json!("op-ed25519");
    ed.jwk["alg"] = json!("Ed25519");
    let idp = FakeIdp::start_with(vec![ed.jwk.clone()]).await;
    let app = server_for(keycloak(&idp)).await;
    let claims = idp.claims("op-ed", &["scope1"], |_| {});
    let signed = |alg: &str| {
        let header = json!({ "alg": alg, "typ": "at+jwt", "kid": "op-ed25519" });
        sign_raw(&header, &claims, &ed.encoding, Algorithm::EdDSA)
    };
    for alg in ["Ed25519", "EdDSA"] {
        let user = get_caller(&app, &signed(alg)).await.expect(alg);
        assert_eq!(user["username"], "op-ed");
    }
    // Other spellings are no algorithm here.
    for alg in ["ed25519", "Ed448", "EDDSA"] {
        assert_unauthenticated(get_caller(&app, &signed(alg)).await, "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_at_jwt_accepts_only_tokens_typed_so() {
    let idp = FakeIdp::start().await;
    let app = server_for(keycloak(&idp).requiring_at_jwt()).await;
    let claims = idp.claims("op-carl", &["scope1"], |_| {});
    let typed = rsa_token_with_header(&idp, json!({ "alg": "RS256", "typ": "at+jwt" }), &claims);
    assert!(get_caller(&app, &typed).await.is_ok());
    // Keycloak's `typ: Bearer` claim is not enough, nor is `JWT`.
    for header in [
        json!({ "alg": "RS256", "typ": "JWT" }),
        json!({ "alg": "RS256" }),
    ] {
        let token = rsa_token_with_header(&idp, header, &claims);
        assert_unauthenticated(get_caller(&app, &token).await, "invalid_token");
    }
    // The flag does it for `rpcguard serve`.
    let dir = tempfile::tempdir().expect("dir");
    let server = ServerProcess::start(
        &[
            "--data-dir",
            dir.path().to_str().expect("utf-8 path"),
            "--oidc-issuer",
            &idp.issuer,
            "--oidc-audience",
            AUDIENCE,
            "--oidc-jwks",
            &idp.jwks_url,
            "--oidc-require-at-jwt",
        ],
        &[],
    );
    let client = server.client(Some(&typed));
    assert!(call(&client, "get_caller", json!({})).await.is_ok());
    let untyped = idp.rsa_token(&claims);
    let client = server.client(Some(&untyped));
    assert_unauthenticated(
        call(&client, "get_caller", json!({})).await,
        "invalid_token",
    );
}

#[test]
fn an_unreadable_jwks_file_stops_the_server_naming_its_cause_once() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("missing-jwks.json");
    let out = serve_refused(
        &[
            "--data-dir",
            dir.path().to_str().expect("utf-8 path"),
            "--oidc-issuer",
            "https://op.example",
            "--oidc-audience",
            AUDIENCE,
            "--oidc-jwks",
            missing.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    let error = out
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {out}"));
    assert!(error.contains("missing-jwks.json"), "{error}");
    assert_eq!(error.matches("No such file").count(), 1, "{error}");
}
