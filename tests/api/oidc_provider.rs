//! Issue 24, interop with a real OpenID provider: `oidc-provider` (npm,
//! OpenID Certified, pinned in `tests/clients/oidc/package-lock.json`),
//! run by `node tests/clients/oidc/provider.mjs`, issuing JWT access tokens
//! (client credentials with a resource indicator, and the authorization
//! code flow) and ID tokens (code flow), against `rpcguard serve` with
//! `--oidc-*` pointing at it: access tokens accepted with their scopes, ID
//! tokens refused whatever the audience setting, expiry, a key rotation at
//! the provider picked up, and a second provider's tokens refused.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::helpers::*;

/// A running `provider.mjs`: an oidc-provider on 127.0.0.1, driven by JSON
/// lines on its stdin. Killed on drop.
struct OpenIdProvider {
    child: Child,
    stdin: ChildStdin,
    /// Its stdout, line by line (read by a thread).
    answers: UnboundedReceiver<String>,
    /// Its `iss`.
    issuer: String,
    jwks_uri: String,
    /// The client it issues tokens to (the `aud` of its ID tokens).
    client_id: String,
    /// The resource indicator its access tokens are for (their `aud`).
    resource: String,
}

impl OpenIdProvider {
    /// Starts the provider with `args` (`--issuer`, `--alg`).
    async fn start(args: &[&str]) -> OpenIdProvider {
        let mut child = std::process::Command::new("node")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/oidc"))
            .arg("provider.mjs")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its warnings (Node 20 runtime, in-memory adapter) are noise.
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs tests/clients/oidc/provider.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, answers) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut provider = OpenIdProvider {
            child,
            stdin,
            answers,
            issuer: String::new(),
            jwks_uri: String::new(),
            client_id: String::new(),
            resource: String::new(),
        };
        let started = provider.next_answer().await;
        let field = |name: &str| started[name].as_str().expect(name).to_owned();
        provider.issuer = field("issuer");
        provider.jwks_uri = field("jwks_uri");
        provider.client_id = field("client_id");
        provider.resource = field("resource");
        provider
    }

    async fn next_answer(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.answers.recv())
            .await
            .expect("the provider answers within 60 s")
            .expect("the provider is running");
        let answer: Value = serde_json::from_str(&line).expect("a JSON line");
        assert!(answer.get("error").is_none(), "the provider: {answer}");
        answer
    }

    /// Sends `command`, returns the provider's answer.
    async fn ask(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("write to the provider");
        self.next_answer().await
    }

    /// A client-credentials access token for the resource, asking `scope`.
    async fn client_credentials(&mut self, scope: &str) -> String {
        let answer = self
            .ask(json!({ "op": "client_credentials", "scope": scope }))
            .await;
        answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// The access token and ID token of an authorization code flow (the
    /// user `alice`) asking `scope`, with `nonce` if given.
    async fn code_flow(&mut self, scope: &str, nonce: Option<&str>) -> (String, String) {
        let answer = self
            .ask(json!({ "op": "code_flow", "scope": scope, "nonce": nonce }))
            .await;
        let token = |name: &str| answer[name].as_str().expect(name).to_owned();
        (token("access_token"), token("id_token"))
    }
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rpcguard serve` accepting `provider`'s tokens for `audience`, with
/// `extra` flags.
fn server_for(
    provider: &OpenIdProvider,
    audience: &str,
    extra: &[&str],
) -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let mut args = vec![
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--oidc-issuer",
        &provider.issuer,
        "--oidc-audience",
        audience,
        "--oidc-jwks",
        &provider.jwks_uri,
        "--oidc-jwks-cooldown",
        "1",
    ];
    args.extend_from_slice(extra);
    (ServerProcess::start(&args, &[]), dir)
}

async fn get_caller(
    server: &ServerProcess,
    token: &str,
) -> Result<Value, jsonrpsee::types::ErrorObjectOwned> {
    call(&server.client(Some(token)), "get_caller", json!({})).await
}

async fn require_scopes(
    server: &ServerProcess,
    token: &str,
) -> Result<Value, jsonrpsee::types::ErrorObjectOwned> {
    call(&server.client(Some(token)), "require_scopes", json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_oidc_provider,
    ignore = "oidc-provider: run `npm ci --prefix tests/clients/oidc`"
)]
async fn a_real_providers_access_tokens_work_and_its_id_tokens_never_do() {
    let mut op = OpenIdProvider::start(&[]).await;
    let with_scope1 = op.client_credentials("scope1").await;
    let reports_only = op.client_credentials("reports").await;
    let (users_access, id_token) = op.code_flow("openid scope1", Some("n-0S6_WzA2Mj")).await;
    let (_, id_token_without_nonce) = op.code_flow("openid", None).await;
    // What the provider issued: typed access tokens for the resource, and
    // ID tokens for the client (untyped, as oidc-provider writes them).
    assert_eq!(token_header(&with_scope1)["typ"], "at+jwt");
    assert_eq!(token_claims(&with_scope1)["aud"], op.resource.as_str());
    assert_eq!(token_claims(&id_token)["aud"], op.client_id.as_str());
    assert_eq!(token_claims(&id_token)["nonce"], "n-0S6_WzA2Mj");
    assert!(token_header(&id_token).get("typ").is_none());

    // The audience is the resource (the API's identifier at the provider):
    // access tokens work, with their scopes, as alone or with
    // --oidc-require-at-jwt.
    for extra in [&[][..], &["--oidc-require-at-jwt"][..]] {
        let (server, _dir) = server_for(&op, &op.resource.clone(), extra);
        let machine = get_caller(&server, &with_scope1)
            .await
            .expect("client credentials");
        assert_eq!(machine["username"], op.client_id.as_str());
        assert_eq!(machine["scopes"], json!({ "Bearer": ["scope1"] }));
        assert_eq!(
            require_scopes(&server, &with_scope1).await.expect("scope1"),
            json!(true)
        );
        let denied = require_scopes(&server, &reports_only).await;
        let err = assert_error(denied, -32099, "Permission error");
        let data: Value = serde_json::from_str(err.data().expect("data").get()).expect("json");
        assert_eq!(data, json!({ "missing_scopes": { "Bearer": ["scope1"] } }));
        let alice = get_caller(&server, &users_access).await.expect("code flow");
        assert_eq!(alice["username"], "alice");
        assert_eq!(alice["scopes"], json!({ "Bearer": ["scope1"] }));
        // Its ID tokens: another audience.
        for id in [&id_token, &id_token_without_nonce] {
            assert_unauthenticated(get_caller(&server, id).await, "invalid_token");
        }
    }

    // The audience is the client id (what a service that is also the
    // OpenID client might configure): the ID token names it in `aud`, is
    // signed by the same key for the same issuer, and is still refused: by
    // its `nonce` by default, by its missing `typ: at+jwt` with
    // --oidc-require-at-jwt (then even without a nonce).
    let client_id = op.client_id.clone();
    let (server, _dir) = server_for(&op, &client_id, &[]);
    assert_unauthenticated(get_caller(&server, &id_token).await, "invalid_token");
    assert_unauthenticated(get_caller(&server, &with_scope1).await, "invalid_token");
    let (strict, _dir) = server_for(&op, &client_id, &["--oidc-require-at-jwt"]);
    for id in [&id_token, &id_token_without_nonce] {
        assert_unauthenticated(get_caller(&strict, id).await, "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_oidc_provider,
    ignore = "oidc-provider: run `npm ci --prefix tests/clients/oidc`"
)]
async fn expiry_a_key_rotation_and_a_second_provider() {
    let mut op = OpenIdProvider::start(&["--alg", "RS256"]).await;
    let (server, _dir) = server_for(&op, &op.resource.clone(), &[]);

    // Expiry: a token that lives one second.
    op.ask(json!({ "op": "set_ttl", "seconds": 1 })).await;
    let short = op.client_credentials("scope1").await;
    op.ask(json!({ "op": "set_ttl", "seconds": 300 })).await;
    let exp = token_claims(&short)["exp"].as_u64().expect("exp");
    while rpcguard_accounts::clock::unix_now().expect("clock") <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_unauthenticated(get_caller(&server, &short).await, "expired_token");

    // A key rotation at the provider (to an Ed25519 key, `alg: Ed25519`,
    // RFC 9864's name): the old key leaves its JWKS. The first token of
    // the new key makes rpcguard fetch the set again, and verifies; the old
    // key's tokens stop with it.
    let before = op.client_credentials("scope1").await;
    assert!(get_caller(&server, &before).await.is_ok());
    op.ask(json!({ "op": "rotate", "alg": "Ed25519" })).await;
    let after = op.client_credentials("scope1").await;
    assert_eq!(token_header(&after)["alg"], "Ed25519");
    assert_ne!(token_header(&after)["kid"], token_header(&before)["kid"]);
    let caller = get_caller(&server, &after)
        .await
        .expect("the rotated key is found");
    assert_eq!(caller["scopes"], json!({ "Bearer": ["scope1"] }));
    assert_unauthenticated(get_caller(&server, &before).await, "invalid_token");

    // A second provider claiming the same issuer (its own keys), and one
    // with its own issuer: neither's tokens pass, though the first's do.
    let mut imposter = OpenIdProvider::start(&["--issuer", &op.issuer]).await;
    let mut stranger = OpenIdProvider::start(&[]).await;
    assert_eq!(imposter.issuer, op.issuer);
    assert_ne!(stranger.issuer, op.issuer);
    // Past the JWKS cooldown: the imposter's kid makes one more fetch of
    // the real provider's set, which does not have it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for token in [
        imposter.client_credentials("scope1").await,
        stranger.client_credentials("scope1").await,
    ] {
        assert_unauthenticated(get_caller(&server, &token).await, "invalid_token");
    }
    assert!(get_caller(&server, &after).await.is_ok());
    let log = server.log();
    assert!(!log.contains(&after), "a token in the log");
}

/// The JOSE header of `token`, without verifying anything.
fn token_header(token: &str) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = token.split('.').next().expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("JSON")
}
