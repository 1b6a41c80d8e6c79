//! A fake identity provider on loopback, for the external-issuer tests: it
//! makes its own RSA and EC keys, serves their JWKS over HTTP (counting the
//! fetches), signs Keycloak-shaped tokens, and can be stopped and started
//! again on the same address, with its keys rotated.
//!
//! Also [`Trap`]: a loopback listener that only counts connections, for
//! the URLs a forged token header points at (`jku`, `x5u`): nothing may
//! ever connect to it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rpcguard_accounts::keys::{KeyAlg, StoredKey};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The audience the fake provider's tokens name (the service's client id).
pub const AUDIENCE: &str = "rpc";

/// One of the provider's signing keys.
pub struct IdpKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    /// Its public JWK, as the JWKS lists it.
    pub jwk: Value,
    /// Its private material (PKCS#1 / PKCS#8 DER), for leak searches.
    pub material: Vec<u8>,
}

impl IdpKey {
    /// A fresh key of `alg` (RS256 or ES256 here).
    pub fn generate(alg: KeyAlg) -> IdpKey {
        let now = rpcguard_accounts::clock::unix_now().expect("clock");
        let stored = StoredKey::generate(alg, now).expect("key");
        let material = stored.material().expect("material");
        let encoding = match alg {
            KeyAlg::RS256 => EncodingKey::from_rsa_der(&material),
            KeyAlg::ES256 => EncodingKey::from_ec_der(&material),
            KeyAlg::EdDSA => EncodingKey::from_ed_der(&material),
            KeyAlg::HS256 => panic!("the provider's keys are asymmetric"),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg.algorithm()).expect("public JWK");
        jwk.common.key_id = Some(format!("kc-{}", stored.kid));
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        IdpKey {
            kid: format!("kc-{}", stored.kid),
            alg: alg.algorithm(),
            encoding,
            jwk: serde_json::to_value(&jwk).expect("JWK JSON"),
            material,
        }
    }

    /// `claims` signed with this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// What the provider serves and signs with.
struct State {
    rsa: IdpKey,
    ec: IdpKey,
    /// More JWKS entries (a symmetric key, say), listed after the keys.
    extra: Vec<Value>,
}

/// A running fake identity provider.
pub struct FakeIdp {
    pub addr: SocketAddr,
    /// The `iss` of its tokens (`http://ADDR/realms/acme`, Keycloak's shape).
    pub issuer: String,
    /// Where its JWKS is (Keycloak's path).
    pub jwks_url: String,
    hits: Arc<AtomicUsize>,
    state: Arc<Mutex<State>>,
    server: Option<JoinHandle<()>>,
}

impl FakeIdp {
    /// A provider with a new RSA and a new EC key, listening on loopback.
    pub async fn start() -> FakeIdp {
        Self::start_with(Vec::new()).await
    }

    /// A provider whose JWKS also lists `extra` entries.
    pub async fn start_with(extra: Vec<Value>) -> FakeIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut idp = FakeIdp {
            addr,
            issuer: format!("http://{addr}/realms/acme"),
            jwks_url: format!("http://{addr}/realms/acme/protocol/openid-connect/certs"),
            hits: Arc::new(AtomicUsize::new(0)),
            state: Arc::new(Mutex::new(State {
                rsa: IdpKey::generate(KeyAlg::RS256),
                ec: IdpKey::generate(KeyAlg::ES256),
                extra,
            })),
            server: None,
        };
        idp.serve(listener);
        idp
    }

    fn serve(&mut self, listener: TcpListener) {
        let (hits, state) = (self.hits.clone(), self.state.clone());
        self.server = Some(tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (hits, state) = (hits.clone(), state.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let certs =
                        head.starts_with(b"GET /realms/acme/protocol/openid-connect/certs ");
                    let (status, body) = if certs {
                        hits.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", jwks_of(&state).to_string())
                    } else {
                        ("404 Not Found", "{}".to_owned())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        }));
    }

    /// Stops listening (the port is closed: fetches fail).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.expect("bind again");
        self.serve(listener);
    }

    /// Replaces both keys by new ones (the old ones leave the JWKS).
    pub fn rotate(&self) {
        let mut state = self.state.lock().expect("state");
        state.rsa = IdpKey::generate(KeyAlg::RS256);
        state.ec = IdpKey::generate(KeyAlg::ES256);
    }

    /// How many times its JWKS was fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Keycloak-shaped claims for `sub`, valid for five minutes, changed
    /// by `edit`: realm roles in `realm_access.roles`, OAuth scopes in
    /// `scope`, an audience list.
    pub fn claims(
        &self,
        sub: &str,
        roles: &[&str],
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> Value {
        let now = rpcguard_accounts::clock::unix_now().expect("clock");
        let mut claims = json!({
            "exp": now + 300,
            "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iss": self.issuer,
            "aud": [AUDIENCE, "account"],
            "sub": sub,
            "typ": "Bearer",
            "azp": AUDIENCE,
            "scope": "openid profile email",
            "realm_access": { "roles": roles },
            "resource_access": { "account": { "roles": ["manage-account"] } },
            "preferred_username": "kc-user",
            "email": "user@example.com",
        })
        .as_object()
        .cloned()
        .expect("object");
        edit(&mut claims);
        Value::Object(claims)
    }

    /// `claims` signed with the provider's RSA key.
    pub fn rsa_token(&self, claims: &Value) -> String {
        self.state.lock().expect("state").rsa.sign(claims)
    }

    /// `claims` signed with the provider's RSA key under `header` (as is:
    /// its `alg` and `kid` are the caller's choice).
    pub fn sign_with_rsa(&self, header: &Header, claims: &Value) -> String {
        let state = self.state.lock().expect("state");
        jsonwebtoken::encode(header, claims, &state.rsa.encoding).expect("sign")
    }

    /// `claims` signed with the provider's RSA key (RS256) under `header`,
    /// a JSON object used as is (any `typ`, `crit`, or `alg` spelling).
    pub fn sign_raw_with_rsa(&self, header: &Value, claims: &Value) -> String {
        let state = self.state.lock().expect("state");
        sign_raw(header, claims, &state.rsa.encoding, Algorithm::RS256)
    }

    /// `claims` signed with the provider's EC key.
    pub fn ec_token(&self, claims: &Value) -> String {
        self.state.lock().expect("state").ec.sign(claims)
    }

    /// The current RSA key's kid and public JWK.
    pub fn rsa_public(&self) -> (String, Value) {
        let state = self.state.lock().expect("state");
        (state.rsa.kid.clone(), state.rsa.jwk.clone())
    }

    /// The private material of the current keys.
    pub fn private_material(&self) -> Vec<Vec<u8>> {
        let state = self.state.lock().expect("state");
        vec![state.rsa.material.clone(), state.ec.material.clone()]
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// `claims` under `header` (a JSON object, used as is), signed with `key`
/// in `alg` whatever the header says.
pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{signature}")
}

fn jwks_of(state: &Mutex<State>) -> Value {
    let state = state.lock().expect("state");
    let mut keys = vec![state.rsa.jwk.clone(), state.ec.jwk.clone()];
    keys.extend(state.extra.iter().cloned());
    json!({ "keys": keys })
}

/// A listener that counts the connections made to it, and answers none.
pub struct Trap {
    pub url: String,
    connections: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Trap {
    pub async fn start() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Trap {
            url: format!("http://{addr}/"),
            connections,
            server,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.server.abort();
    }
}
