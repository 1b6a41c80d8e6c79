//! The adversarial suite: token forgeries (RFC 8725), Bearer syntax (RFC
//! 6750), password and username edge cases, enumeration, brute force and
//! resource exhaustion. Each attack runs against a real `rpcguard serve`
//! process, and afterwards its whole log and every response it gave are
//! searched for secrets (passwords, hashes, the key, access and refresh
//! tokens and their stored hashes, SQL, panics).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;

const SECRET: &str = "attack-suite-signing-key-0123456789abcdef";

/// A JSON-RPC client over HTTP whose connections leave from `ip`.
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    pub(crate) fn from_ip(target: &Target, ip: [u8; 4]) -> Client {
        Client {
            http: reqwest::Client::builder()
                .local_address(std::net::IpAddr::from(ip))
                .build()
                .expect("client"),
            url: target.process.url.clone(),
        }
    }

    /// Calls `method` with positional `params`; the answer and how long it took.
    pub(crate) async fn rpc(&self, method: &str, params: Value) -> (Value, Duration) {
        let started = Instant::now();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: Value = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        (answer, started.elapsed())
    }
}

/// A server process under attack, remembering every answer it gave.
pub(crate) struct Target {
    pub(crate) process: ServerProcess,
    http: reqwest::Client,
    answers: Mutex<Vec<String>>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Target {
    pub(crate) fn start(extra: &[&str]) -> Target {
        Self::start_in(tempfile::tempdir().expect("dir"), extra)
    }

    /// Starts a server on an existing data dir (for a restart with other flags).
    pub(crate) fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Target {
        let data_dir = dir.path().display().to_string();
        let mut args = vec!["--data-dir", data_dir.as_str()];
        args.extend_from_slice(extra);
        let process = ServerProcess::start(&args, &[("RPCGUARD_SECRET", SECRET)]);
        Target {
            process,
            http: reqwest::Client::new(),
            answers: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    /// A server on a fresh data dir with `args`, logging at debug level
    /// (for the leak searches that want every line there is).
    pub(crate) fn debug_logged(args: &[&str]) -> Target {
        let dir = tempfile::tempdir().expect("dir");
        let data_dir = dir.path().display().to_string();
        let mut all = vec!["--data-dir", data_dir.as_str()];
        all.extend_from_slice(args);
        let process = ServerProcess::start(
            &all,
            &[("RUST_LOG", "info,rpcguard=debug,rpcguard_accounts=debug")],
        );
        Target {
            process,
            http: reqwest::Client::new(),
            answers: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    /// Stops the server and hands back its data dir.
    pub(crate) fn into_dir(self) -> tempfile::TempDir {
        drop(self.process);
        self._dir
    }

    /// POSTs `body` with `headers`; returns status and body text.
    async fn post(&self, body: String, headers: HeaderMap) -> (u16, String) {
        let response = self
            .http
            .post(&self.process.url)
            .header("content-type", "application/json")
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let text = response.text().await.expect("text");
        self.answers.lock().expect("lock").push(text.clone());
        (status, text)
    }

    /// Calls `method` with `params`; returns the parsed answer.
    pub(crate) async fn rpc(&self, method: &str, params: Value, headers: HeaderMap) -> Value {
        let body =
            json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
        let (status, text) = self.post(body, headers).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("JSON answer")
    }

    pub(crate) async fn sign_up(&self, name: &str, password: &str) -> Value {
        self.rpc("sign_up", json!([name, password]), HeaderMap::new())
            .await
    }

    pub(crate) async fn token(&self, name: &str, password: &str) -> String {
        let answer = self
            .rpc("sign_in", json!([name, password]), HeaderMap::new())
            .await;
        // The one answer that rightly carries a token is not searched for leaks.
        self.answers.lock().expect("lock").pop();
        answer["result"]["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    async fn get_caller(&self, headers: HeaderMap) -> Value {
        self.rpc("get_caller", json!([]), headers).await
    }

    pub(crate) async fn health(&self) {
        let status = self
            .http
            .get(format!("{}health", self.process.url))
            .send()
            .await
            .expect("health")
            .status();
        assert_eq!(status, 200);
    }

    /// Nothing secret in the log or in any answer; nothing logged at error
    /// level; no panic.
    pub(crate) fn assert_no_leaks(&self, secrets: &[&str]) {
        let log = self.process.log();
        assert!(!log.contains(" ERROR "), "error-level log:\n{log}");
        let answers = self.answers.lock().expect("lock").join("\n");
        for (what, text) in [("log", &log), ("answers", &answers)] {
            for needle in secrets.iter().chain([
                &SECRET,
                &"$2b$",
                &"$2y$",
                &"panicked",
                &"SELECT ",
                &"INSERT ",
                &"sqlx",
            ]) {
                assert!(!text.contains(needle), "{what} contains {needle:?}");
            }
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A correctly HS256-signed token with these claims and extra header fields.
fn signed(claims: &Value, header_extra: Value) -> String {
    let mut header = json!({"alg": "HS256", "typ": "JWT"});
    if let (Some(h), Value::Object(extra)) = (header.as_object_mut(), header_extra) {
        h.extend(extra);
    }
    hmac_token(&header, claims)
}

/// Valid claims of the account `victim` in its real session (`uid` holds
/// the claims of a real token: its `uid` and `sid` are copied), changed by
/// `edit`.
fn victim(uid: &Value, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    claims_for("victim", |c| {
        c.insert("uid".into(), uid["uid"].clone());
        c.insert("sid".into(), uid["sid"].clone());
        edit(c);
    })
}

/// A signed token for `victim` without `claim`.
fn signed_without(uid: &Value, claim: &str) -> String {
    signed(
        &victim(uid, |c| {
            c.remove(claim);
        }),
        json!({}),
    )
}

/// A signed token for `victim` with `claim` set to `value`.
fn signed_with(uid: &Value, claim: &str, value: Value) -> String {
    signed(
        &victim(uid, |c| {
            c.insert(claim.into(), value);
        }),
        json!({}),
    )
}

/// `header.payload.HMAC-SHA256(SECRET)` for any header (also a lying one).
fn hmac_token(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn auth(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
    headers
}

fn reason(answer: &Value) -> &str {
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    answer["error"]["data"]["reason"].as_str().expect("reason")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_tokens_are_refused() {
    let target = Target::start(&[]);
    target.sign_up("victim", PASSWORD).await;
    let real = target.token("victim", PASSWORD).await;
    let uid = token_claims(&real);
    let now = rpcguard_accounts::clock::unix_now().expect("clock");
    let (head, rest) = real.split_once('.').expect("jwt");
    let (payload, signature) = rest.split_once('.').expect("jwt");

    let mut invalid: Vec<(&str, String)> = vec![
        (
            "alg none, unsigned",
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), payload),
        ),
        (
            "alg none, signed",
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                payload,
                signature
            ),
        ),
        (
            "alg None",
            hmac_token(&json!({"alg": "None"}), &victim(&uid, |_| {})),
        ),
        (
            "HS384",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS384),
                &victim(&uid, |_| {}),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .expect("hs384"),
        ),
        (
            "HS512",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS512),
                &victim(&uid, |_| {}),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .expect("hs512"),
        ),
        (
            "RS256 with the HMAC key as public key",
            hmac_token(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &victim(&uid, |_| {}),
            ),
        ),
        (
            "ES256 header",
            hmac_token(&json!({"alg": "ES256"}), &victim(&uid, |_| {})),
        ),
        ("signature stripped", format!("{head}.{payload}.")),
        ("no signature part", format!("{head}.{payload}")),
        (
            "signature truncated",
            format!("{head}.{payload}.{}", &signature[..signature.len() - 4]),
        ),
        (
            "payload: sub edited",
            format!(
                "{head}.{}.{signature}",
                b64(claims_for("admin", |_| {}).to_string().as_bytes())
            ),
        ),
        (
            "payload: exp extended",
            format!(
                "{head}.{}.{signature}",
                b64(victim(&uid, |c| {
                    c.insert("exp".into(), json!(now + 999_999));
                })
                .to_string()
                .as_bytes())
            ),
        ),
        (
            "payload: scope added",
            format!(
                "{head}.{}.{signature}",
                b64(victim(&uid, |c| {
                    c.insert("scope".into(), json!("scope1"));
                })
                .to_string()
                .as_bytes())
            ),
        ),
        (
            "another key",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &victim(&uid, |_| {}),
                &EncodingKey::from_secret(&[3u8; 32]),
            )
            .expect("other key"),
        ),
        ("another key with jku", {
            let header =
                json!({"alg": "HS256", "jku": "http://127.0.0.1:9/keys.json", "kid": "attacker"});
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(victim(&uid, |_| {}).to_string().as_bytes())
            );
            let mut mac = Hmac::<Sha256>::new_from_slice(&[3u8; 32]).expect("key");
            mac.update(input.as_bytes());
            format!("{input}.{}", b64(&mac.finalize().into_bytes()))
        }),
        (
            "nbf in the future",
            signed_with(&uid, "nbf", json!(now + 3600)),
        ),
        (
            "iat in the future",
            signed_with(&uid, "iat", json!(now + 3600)),
        ),
        ("missing exp", signed_without(&uid, "exp")),
        ("missing sid", signed_without(&uid, "sid")),
        ("missing iss", signed_without(&uid, "iss")),
        ("missing aud", signed_without(&uid, "aud")),
        ("missing sub", signed_without(&uid, "sub")),
        ("wrong iss", signed_with(&uid, "iss", json!("evil"))),
        ("wrong aud", signed_with(&uid, "aud", json!("evil"))),
        (
            "aud as a list without us",
            signed_with(&uid, "aud", json!(["evil"])),
        ),
        (
            "unknown user",
            signed(&claims_for("ghost", |_| {}), json!({})),
        ),
        (
            "exp as a string",
            signed_with(&uid, "exp", json!("tomorrow")),
        ),
        ("no account id (older version)", signed_without(&uid, "uid")),
        (
            "another account's id",
            signed_with(&uid, "uid", json!("0123456789abcdef0123456789abcdef")),
        ),
        (
            "huge token",
            format!("{head}.{}.{signature}", "A".repeat(64 * 1024)),
        ),
        ("garbage", "!!!".to_owned()),
    ];
    // One bit flipped in the signature.
    let mut bits = URL_SAFE_NO_PAD.decode(signature).expect("sig");
    bits[0] ^= 1;
    invalid.push((
        "one bit flipped",
        format!("{head}.{payload}.{}", b64(&bits)),
    ));

    for (what, token) in &invalid {
        let answer = target.get_caller(auth(&format!("Bearer {token}"))).await;
        assert_eq!(reason(&answer), "invalid_token", "{what}: {answer}");
    }

    let expired = signed(
        &victim(&uid, |c| {
            c.insert("iat".into(), json!(now - 60));
            c.insert("exp".into(), json!(now - 1));
        }),
        json!({}),
    );
    assert_eq!(
        reason(&target.get_caller(auth(&format!("Bearer {expired}"))).await),
        "expired_token"
    );

    // jku / x5u on a correctly signed token are ignored, never fetched.
    let ignored = signed(
        &victim(&uid, |_| {}),
        json!({"jku": "http://127.0.0.1:9/jwks", "x5u": "http://127.0.0.1:9/cert"}),
    );
    let answer = target.get_caller(auth(&format!("Bearer {ignored}"))).await;
    assert_eq!(answer["result"]["username"], "victim", "{answer}");
    // A `kid` names a key of the local set, or the token is refused (issue
    // 12): never a path, never looked up anywhere else.
    let unknown_kid = signed(
        &victim(&uid, |_| {}),
        json!({"kid": "../../etc/passwd", "jku": "http://127.0.0.1:9/jwks"}),
    );
    let answer = target
        .get_caller(auth(&format!("Bearer {unknown_kid}")))
        .await;
    assert_eq!(reason(&answer), "invalid_token", "{answer}");

    // Bearer syntax (RFC 6750).
    let syntax: Vec<(&str, HeaderMap)> = vec![
        ("two spaces", auth(&format!("Bearer  {real}"))),
        ("no Bearer prefix", auth(&real)),
        ("Basic", auth("Basic dmljdGltOnBhc3N3b3Jk")),
        ("token then junk", auth(&format!("Bearer {real} extra"))),
        ("empty token", auth("Bearer ")),
        ("scheme only", auth("Bearer")),
        ("two Authorization headers", {
            let mut h = auth(&format!("Bearer {real}"));
            h.append(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {real}")).expect("header"),
            );
            h
        }),
    ];
    for (what, headers) in syntax {
        let answer = target.get_caller(headers).await;
        assert_eq!(reason(&answer), "invalid_token", "{what}: {answer}");
    }
    // Case-insensitive scheme word still works; a huge unrelated header is harmless.
    let mut big = auth(&format!("bEARER {real}"));
    big.insert(
        "x-padding",
        HeaderValue::from_str(&"p".repeat(64 * 1024)).expect("header"),
    );
    assert_eq!(target.get_caller(big).await["result"]["username"], "victim");

    target.health().await;
    target.assert_no_leaks(&[PASSWORD, &real]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_username_edge_cases() {
    let target = Target::start(&[]);
    let edge_72 = format!("{}é", "x".repeat(70)); // 72 bytes
    let edge_73 = format!("{}é", "x".repeat(71)); // 73 bytes: é crosses the edge
    let refused: Vec<(&str, Value)> = vec![
        ("empty password", json!(["alice", ""])),
        ("7 bytes", json!(["alice", "1234567"])),
        ("73 bytes", json!(["alice", "x".repeat(73)])),
        ("multi-byte crossing 72", json!(["alice", edge_73])),
        ("NUL in password", json!(["alice", "pass\u{0}word123"])),
        ("space in name", json!(["al ice", PASSWORD])),
        ("control character", json!(["al\u{7}ice", PASSWORD])),
        ("newline", json!(["alice\n", PASSWORD])),
        ("path traversal", json!(["../../etc", PASSWORD])),
        ("SQL", json!(["' OR 1=1 --", PASSWORD])),
        ("65 characters", json!(["a".repeat(65), PASSWORD])),
        ("Cyrillic look-alike", json!(["аlice", PASSWORD])),
        ("full-width", json!(["ａｌｉｃｅ", PASSWORD])),
        ("number as name", json!([12345, PASSWORD])),
        ("object as password", json!(["alice", {"$gt": ""}])),
        ("null password", json!(["alice", null])),
        ("array as name", json!([["alice"], PASSWORD])),
        ("bool as password", json!(["alice", true])),
    ];
    for (what, params) in &refused {
        let answer = target
            .rpc("sign_up", params.clone(), HeaderMap::new())
            .await;
        assert_eq!(answer["error"]["code"], -32602, "{what}: {answer}");
        assert_eq!(answer["error"]["message"], "Invalid params");
    }
    for (what, params) in &refused {
        let answer = target
            .rpc("sign_in", params.clone(), HeaderMap::new())
            .await;
        assert_eq!(answer["error"]["code"], -32602, "sign_in {what}: {answer}");
    }
    assert!(
        target.sign_up("alice", "x".repeat(72).as_str()).await["result"].is_object(),
        "exactly 72 bytes"
    );
    assert!(
        target.sign_up("bob", &edge_72).await["result"].is_object(),
        "72 bytes with é"
    );
    let dup = target.sign_up("ALICE", PASSWORD).await;
    assert_eq!(dup["error"]["code"], -32003, "mixed-case duplicate: {dup}");
    // Nothing else was stored.
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args([
            "user",
            "list",
            "--data-dir",
            &target._dir.path().display().to_string(),
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&list.stdout);
    assert_eq!(
        listing.lines().count(),
        3,
        "a header and two users: {listing}"
    );
    target.assert_no_leaks(&["x".repeat(72).as_str(), &edge_73, PASSWORD]);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// What [`paired_sign_in_timing`] measured.
pub(crate) struct PairedTiming {
    /// Median over pairs of (unknown user's time ÷ existing user's time).
    pub(crate) ratio: f64,
    /// Median time of the unknown user's attempts.
    pub(crate) unknown: Duration,
    /// Median time of the existing user's (wrong password) attempts.
    pub(crate) existing: Duration,
    /// Every error object answered, in order.
    pub(crate) answers: Vec<Value>,
}

/// Times `pairs` wrong-password `sign_in`s of `existing` against as many of
/// the unknown user `unknown`. Tries are made in pairs, back to back,
/// alternating which goes first, and compared pair by pair: load from the
/// rest of the suite (the server's bcrypt threads run at the lowest
/// priority) then slows both members of a pair alike instead of skewing one
/// median. One more pair first warms up and is not counted.
pub(crate) async fn paired_sign_in_timing(
    target: &Target,
    existing: &str,
    unknown: &str,
    pairs: usize,
) -> PairedTiming {
    let (mut unknown_took, mut existing_took, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut answers = Vec::new();
    for i in 0..=pairs {
        let order = if i % 2 == 0 {
            [unknown, existing]
        } else {
            [existing, unknown]
        };
        let mut took = [Duration::ZERO; 2];
        for name in order {
            let started = Instant::now();
            let answer = target
                .rpc("sign_in", json!([name, "wrong password"]), HeaderMap::new())
                .await;
            took[usize::from(name == existing)] = started.elapsed();
            answers.push(answer["error"].clone());
        }
        if i > 0 {
            // the first pair warms up
            unknown_took.push(took[0]);
            existing_took.push(took[1]);
            ratios.push(took[0].as_secs_f64() / took[1].as_secs_f64());
        }
    }
    ratios.sort_by(f64::total_cmp);
    PairedTiming {
        ratio: ratios[ratios.len() / 2],
        unknown: median(unknown_took),
        existing: median(existing_took),
        answers,
    }
}

/// Asserts that failed sign_ins of `existing` (wrong password) and of
/// `unknown` give identical errors and take the same time within `bound`
/// (median of per-pair ratios over `pairs` back-to-back pairs). A burst of
/// load elsewhere on a 2-core machine can skew one series (1.107 once,
/// beside a release build), while a real difference shows in every
/// series: the bound must fail in two series in a row.
pub(crate) async fn assert_similar_timing(
    target: &Target,
    existing: &str,
    unknown: &str,
    pairs: usize,
    bound: f64,
) {
    let mut ratios = Vec::new();
    for _ in 0..2 {
        let timing = paired_sign_in_timing(target, existing, unknown, pairs).await;
        let answers = &timing.answers;
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "identical error objects: {answers:?}"
        );
        let (ratio, u, e) = (timing.ratio, timing.unknown, timing.existing);
        eprintln!("unknown {u:?}, existing {e:?}, median pair ratio {ratio:.3}");
        if (ratio - 1.0).abs() < bound {
            return;
        }
        ratios.push(format!("{ratio:.3} (medians {u:?} vs {e:?})"));
    }
    panic!("unknown vs existing user: median pair ratios {ratios:?}, twice past {bound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_does_not_reveal_which_usernames_exist() {
    // Throttling off so that 2 x 30 attempts are measured, at a cost (11, ~120 ms)
    // where bcrypt dominates the noise of a busy machine.
    let target = Target::start(&[&["--bcrypt-cost", "11"][..], &NO_SIGNIN_THROTTLE].concat());
    target.sign_up("alice", PASSWORD).await;
    assert_similar_timing(&target, "alice", "nobody", 30, 0.10).await;
}

/// A disabled account answers a wrong password exactly like an unknown
/// user (same error object, same time, as the enumeration test measures),
/// and -32004 only for the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_accounts_reveal_nothing_without_the_password() {
    let target = Target::start(&[&["--bcrypt-cost", "11"][..], &NO_SIGNIN_THROTTLE].concat());
    target.sign_up("alice", PASSWORD).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
        .args(["user", "disable", "alice", "--data-dir"])
        .arg(target._dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("rpcguard user disable");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let right = target
        .rpc("sign_in", json!(["alice", PASSWORD]), HeaderMap::new())
        .await;
    assert_eq!(
        right["error"],
        json!({"code": -32004, "message": "Account disabled"})
    );
    assert_similar_timing(&target, "alice", "nobody", 30, 0.10).await;
    target.assert_no_leaks(&[PASSWORD]);
}

/// Refresh tokens (and their stored hashes) never reach the log or any
/// answer but the one that hands them out, whatever is done with them:
/// rotation, reuse, sign-out, made-up and malformed tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_never_leak() {
    let target = Target::start(&[&["--bcrypt-cost", "4"][..], &NO_SIGNIN_THROTTLE].concat());
    target.sign_up("alice", PASSWORD).await;
    // The answers that rightly carry tokens are taken out of the search.
    let handed_out = |answer: &Value| -> (String, String) {
        (
            answer["result"]["access_token"]
                .as_str()
                .expect("access")
                .to_owned(),
            answer["result"]["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        )
    };
    let first = target
        .rpc("sign_in", json!(["alice", PASSWORD]), HeaderMap::new())
        .await;
    target.answers.lock().expect("lock").pop();
    let (access_1, refresh_1) = handed_out(&first);
    let second = target
        .rpc("refresh", json!([refresh_1]), HeaderMap::new())
        .await;
    target.answers.lock().expect("lock").pop();
    let (access_2, refresh_2) = handed_out(&second);
    // Reuse of the rotated token (logged as a warning, without the token).
    let reused = target
        .rpc("refresh", json!([refresh_1]), HeaderMap::new())
        .await;
    assert_eq!(reason(&reused), "revoked_token", "{reused}");
    let again = target
        .rpc("refresh", json!([refresh_2]), HeaderMap::new())
        .await;
    assert_eq!(reason(&again), "revoked_token", "{again}");
    // A fresh session, signed out; then its tokens presented again.
    let third = target
        .rpc("sign_in", json!(["alice", PASSWORD]), HeaderMap::new())
        .await;
    target.answers.lock().expect("lock").pop();
    let (access_3, refresh_3) = handed_out(&third);
    let out = target
        .rpc("sign_out", json!([]), auth(&format!("Bearer {access_3}")))
        .await;
    assert_eq!(out["result"], true, "{out}");
    for token in [&access_3, &access_2, &access_1] {
        let answer = target
            .rpc("authenticate", json!([token]), HeaderMap::new())
            .await;
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
    }
    let made_up = b64(&[7u8; 32]);
    for token in [
        refresh_3.as_str(),
        made_up.as_str(),
        "short",
        &format!("{refresh_3}x"),
    ] {
        let answer = target
            .rpc("refresh", json!([token]), HeaderMap::new())
            .await;
        assert_eq!(answer["error"]["code"], -32001, "{answer}");
    }
    let hashes: Vec<String> = [&refresh_1, &refresh_2, &refresh_3]
        .iter()
        .map(|t| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(t.as_bytes()))
        })
        .collect();
    let mut secrets: Vec<&str> = vec![
        PASSWORD, &access_1, &access_2, &access_3, &refresh_1, &refresh_2, &refresh_3,
    ];
    secrets.extend(hashes.iter().map(String::as_str));
    target.assert_no_leaks(&secrets);
    let log = target.process.log();
    assert!(
        log.contains("refresh token reused"),
        "reuse is logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_throttled_across_batches_sessions_and_transports() {
    let target = Target::start(&[]);
    target.sign_up("victim", PASSWORD).await;

    // 100 sign_ins packed into one batch: at most 5 reach bcrypt.
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "sign_in", "params": ["victim", format!("guess-{i:04}")]}))
        .collect();
    let (status, text) = target
        .post(Value::Array(batch).to_string(), HeaderMap::new())
        .await;
    assert_eq!(status, 200);
    let answers: Vec<Value> = serde_json::from_str(&text).expect("batch");
    let code = |c: i64| answers.iter().filter(|a| a["error"]["code"] == c).count();
    assert_eq!((code(-32002), code(-32005)), (5, 95), "{text}");
    let throttled = answers
        .iter()
        .find(|a| a["error"]["code"] == -32005)
        .expect("throttled");
    assert!(
        throttled["error"]["data"]["retry_after_s"]
            .as_u64()
            .expect("retry_after_s")
            >= 1
    );

    // Neither a fresh WebSocket session nor plain HTTP gets a new budget.
    for _ in 0..3 {
        let ws = jsonrpsee::ws_client::WsClientBuilder::default()
            .build(format!("ws://{}/", target.process.addr))
            .await
            .expect("ws");
        let err = call(
            &ws,
            "sign_in",
            json!({"username": "victim", "password": "guess-password"}),
        )
        .await
        .expect_err("throttled");
        assert_eq!(err.code(), -32005);
    }
    let answer = target
        .rpc("sign_in", json!(["victim", PASSWORD]), HeaderMap::new())
        .await;
    assert_eq!(
        answer["error"]["code"], -32005,
        "even the right password waits: {answer}"
    );

    // The real user, from another address, is not locked out.
    let (answer, _) = Client::from_ip(&target, [127, 0, 0, 2])
        .rpc("sign_in", json!(["victim", PASSWORD]))
        .await;
    assert!(answer["result"]["access_token"].is_string(), "{answer}");
    target.assert_no_leaks(&[PASSWORD]);
}

/// Sends raw bytes on a new TCP connection; returns what came back before
/// the server closed or `wait` passed.
fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhaustion_leaves_the_server_up() {
    let target = Target::start(&[
        "--header-timeout",
        "1",
        "--bcrypt-cost",
        "10",
        "--bcrypt-workers",
        "1",
        "--bcrypt-queue",
        "4",
    ]);
    let addr = target.process.addr;

    // A body announced over the limit is refused before it is read.
    let started = Instant::now();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
        64 * 1024 * 1024
    );
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(addr, head.as_bytes(), Duration::from_secs(5))
    })
    .await
    .expect("join");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered without waiting for the body"
    );

    // A body that is over the limit without announcing it.
    let (status, _) = target
        .post(
            format!("[{}]", "1,".repeat(600_000) + "1"),
            HeaderMap::new(),
        )
        .await;
    assert_eq!(status, 413);

    // 10,000 levels of nesting: a parse error, no stack overflow.
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, text) = target.post(nested, HeaderMap::new()).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&text).expect("json");
    // A single error, or a batch of one invalid entry.
    let error = if answer.is_array() {
        &answer[0]["error"]
    } else {
        &answer["error"]
    };
    let code = error["code"].as_i64().expect("code");
    assert!(code == -32700 || code == -32600, "{answer}");
    let deep_params = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"sign_up","params":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (status, text) = target.post(deep_params, HeaderMap::new()).await;
    assert_eq!(status, 200);
    assert!(text.contains("-32602"), "{text}");
    target.health().await;

    // Slow-loris: headers that never finish are cut at the header timeout.
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(
            addr,
            b"POST / HTTP/1.1\r\nhost: x\r\nx-slow: a",
            Duration::from_secs(10),
        )
    })
    .await
    .expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}: {answer:?}",
        started.elapsed()
    );

    // 1,000 WebSocket connections opened and dropped.
    for chunk in 0..10 {
        let sessions = (0..100).map(|_| {
            jsonrpsee::ws_client::WsClientBuilder::default().build(format!("ws://{addr}/"))
        });
        let sessions: Vec<_> = futures::future::join_all(sessions).await;
        assert!(
            sessions.iter().all(|s| s.is_ok()),
            "chunk {chunk} connected"
        );
        drop(sessions);
    }
    target.health().await;

    // A sign_up flood fills the bounded bcrypt queue: the excess is refused
    // at once with -32005, and sign_in works again once the flood drains.
    target.sign_up("alice", PASSWORD).await;
    let flood = (0..40).map(|i| {
        let target = &target;
        async move { target.sign_up(&format!("flood{i}"), PASSWORD).await }
    });
    let results = futures::future::join_all(flood).await;
    let busy = results
        .iter()
        .filter(|a| a["error"]["code"] == -32005)
        .count();
    assert!(busy > 0, "the queue bound was hit");
    assert!(results
        .iter()
        .all(|a| a["result"].is_object() || a["error"]["code"] == -32005));
    target.health().await;
    assert!(!target.token("alice", PASSWORD).await.is_empty());
    target.assert_no_leaks(&[PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sign_ups_survive_kill_9() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().display().to_string();
    let args = [&["--data-dir", data_dir.as_str()][..], &NO_SIGNIN_THROTTLE].concat();
    let server = ServerProcess::start(&args, &[("RPCGUARD_SECRET", SECRET)]);
    let url = server.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streams = (0..4).map(|stream| {
        let url = url.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let name = format!("u{stream}x{i}");
                let body = json!({"jsonrpc": "2.0", "id": i, "method": "sign_up", "params": [name, PASSWORD]});
                let Ok(response) = client.post(&url).json(&body).send().await else { break };
                let Ok(answer) = response.json::<Value>().await else { break };
                if answer["result"]["username"] == name.as_str() {
                    acknowledged.push(name);
                }
            }
            acknowledged
        })
    });
    let streams: Vec<_> = streams.collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut server = server;
    server.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    server.child.wait().expect("reaped");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for stream in streams {
        acknowledged.extend(stream.await.expect("stream"));
    }
    assert!(
        acknowledged.len() > 10,
        "the stream ran: {}",
        acknowledged.len()
    );

    let restarted = ServerProcess::start(&args, &[("RPCGUARD_SECRET", SECRET)]);
    let client = restarted.client(None);
    for name in &acknowledged {
        let token = call(
            &client,
            "sign_in",
            json!({"username": name, "password": PASSWORD}),
        )
        .await;
        assert!(
            token.is_ok(),
            "{name} was acknowledged but is gone: {token:?}"
        );
    }
}

#[tokio::test]
async fn short_keys_are_refused_and_generated_keys_are_private() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().display().to_string();
    let stderr = serve_refused(
        &["--data-dir", &data_dir],
        &[("RPCGUARD_SECRET", "31-bytes-is-one-byte-too-short!")],
    );
    assert!(stderr.contains("256 bits"), "{stderr}");

    // Private (a key file open to others is refused for that first), but short.
    let key_file = dir.path().join("short.key");
    std::fs::write(&key_file, "short").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let key_arg = key_file.display().to_string();
    let stderr = serve_refused(&["--data-dir", &data_dir, "--secret-file", &key_arg], &[]);
    assert!(stderr.contains("256 bits"), "{stderr}");

    let app = TestApp::spawn().await;
    let mode = std::fs::metadata(app.data_dir.path().join("keys.json"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Issue 12: the private half of every key (asymmetric and HMAC, before and
/// after rotations seen by the running server) is never in the log (at
/// debug level), in an answer, or in the JWKS; the JWKS has public keys only.
/// With the key set in `keys.json` (SQLite) ...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_material_never_leaks() {
    key_material_never_leaks_on(None).await;
}

/// ... and in the database (PostgreSQL), rotated through the CLI there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    rpcguard_no_postgres,
    ignore = "PostgreSQL: set RPCGUARD_TEST_DATABASE_URL=postgres://user:pw@host/db"
)]
async fn key_material_in_the_database_never_leaks() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    key_material_never_leaks_on(Some(url)).await;
}

/// The leak search of [`key_material_never_leaks`], on the database at
/// `database_url` when given, else on `keys.json`.
async fn key_material_never_leaks_on(database_url: Option<String>) {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().display().to_string();
    // sqlx's notices at start (migrations: "relation ... already exists,
    // skipping") would trip the search for SQL; `pg_keys.rs` searches
    // sqlx's debug log for key material.
    let mut env = vec![(
        "RUST_LOG",
        "info,rpcguard=debug,rpcguard_accounts=debug,sqlx=warn",
    )];
    // Where `key rotate` works, and what the server logs when it sees it.
    let (key_args, seen_line) = match &database_url {
        Some(url) => {
            env.push(("RPCGUARD_DATABASE_URL", url.as_str()));
            (
                ["--database-url", url.as_str()],
                "key set changed in the database",
            )
        }
        None => (["--data-dir", data_dir.as_str()], "key set changed on disk"),
    };
    let process = ServerProcess::start(&["--data-dir", &data_dir, "--jwt-alg", "ES256"], &env);
    let target = Target {
        process,
        http: reqwest::Client::new(),
        answers: Mutex::new(Vec::new()),
        _dir: dir,
    };
    target.sign_up("alice", PASSWORD).await;
    let jwks_url = format!("{}.well-known/jwks.json", target.process.url);
    for alg in ["RS256", "EdDSA", "HS256"] {
        let token = target.token("alice", PASSWORD).await;
        target.get_caller(auth(&format!("Bearer {token}"))).await;
        target.get_caller(auth("Bearer not.a.token")).await;
        let jwks = target.http.get(&jwks_url).send().await.expect("jwks");
        let jwks = jwks.text().await.expect("text");
        for jwk in serde_json::from_str::<Value>(&jwks).expect("json")["keys"]
            .as_array()
            .expect("keys")
        {
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(jwk.get(private).is_none(), "{private} in {jwk}");
            }
        }
        target.answers.lock().expect("lock").push(jwks);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"))
            .args(["key", "rotate", "--alg", alg])
            .args(key_args)
            .env("RUST_LOG", "debug,sqlx=warn")
            .output()
            .expect("key rotate");
        assert!(out.status.success());
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        target.answers.lock().expect("lock").push(said);
        let seen = Instant::now();
        while target.process.log().matches(seen_line).count()
            < ["RS256", "EdDSA", "HS256"]
                .iter()
                .position(|a| *a == alg)
                .map_or(0, |i| i + 1)
        {
            assert!(seen.elapsed() < Duration::from_secs(5), "rotation not seen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let set = match &database_url {
        Some(url) => database_key_set(url),
        None => rpcguard_accounts::keys::file::read_key_set(
            &std::path::Path::new(&data_dir).join("keys.json"),
        )
        .expect("key set"),
    };
    assert_eq!(set.keys.len(), 4);
    let mut secrets = Vec::new();
    for key in &set.keys {
        let material = key.material().expect("material");
        secrets.push(b64(&material)[..40.min(b64(&material).len())].to_owned());
        let standard = base64::engine::general_purpose::STANDARD.encode(&material);
        secrets.push(standard[..40].to_owned());
        secrets.push(hex::encode(&material[material.len() - 20..]));
    }
    let needles: Vec<&str> = secrets.iter().map(String::as_str).collect();
    target.assert_no_leaks(&needles);
}

/// Issue 12, external issuers: an external token (accepted, expired or
/// forged) is never in the log (at debug level) or in an answer, and nor
/// is anything of the provider's keys but their public halves; refusals
/// are logged without error level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tokens_never_leak() {
    let idp = crate::idp::FakeIdp::start().await;
    let target = Target::debug_logged(&[
        "--oidc-issuer",
        &idp.issuer,
        "--oidc-audience",
        crate::idp::AUDIENCE,
        "--oidc-jwks",
        &idp.jwks_url,
        "--oidc-scopes-claim",
        "realm_access.roles",
    ]);
    let now = rpcguard_accounts::clock::unix_now().expect("clock");
    let good = idp.rsa_token(&idp.claims("kc-leak", &["scope1"], |_| {}));
    let expired = idp.ec_token(&idp.claims("kc-leak", &[], |c| {
        c.insert("exp".into(), json!(now - 60));
    }));
    let stranger = crate::idp::IdpKey::generate(rpcguard_accounts::keys::KeyAlg::RS256)
        .sign(&idp.claims("kc-leak", &["scope1"], |_| {}));
    let answer = target.get_caller(auth(&format!("Bearer {good}"))).await;
    assert_eq!(answer["result"]["username"], "kc-leak", "{answer}");
    for refused in [&expired, &stranger] {
        let answer = target.get_caller(auth(&format!("Bearer {refused}"))).await;
        assert_eq!(answer["error"]["code"], -32001, "{answer}");
    }
    let mut secrets: Vec<String> = Vec::new();
    for token in [&good, &expired, &stranger] {
        secrets.push(token.to_string());
        // The signature alone, and the signed part alone.
        let (signed, signature) = token.rsplit_once('.').expect("a JWT");
        secrets.push(signature.to_owned());
        secrets.push(signed.to_owned());
    }
    for material in idp.private_material() {
        secrets.push(b64(&material)[..40].to_owned());
        secrets.push(hex::encode(&material[material.len() - 20..]));
    }
    // The log is written in batches: wait for the refusal's lines.
    let seen = Instant::now();
    while !target.process.log().contains("fetching it again") {
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "the unknown kid was not logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let needles: Vec<&str> = secrets.iter().map(String::as_str).collect();
    target.assert_no_leaks(&needles);
}
