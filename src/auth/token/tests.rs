//! Tests of issuing and verifying tokens.

use super::*;
use crate::clock::ManualClock;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::EncodingKey;

const UID: &str = "0123456789abcdef0123456789abcdef";
const SID: &str = "fedcba9876543210fedcba9876543210";
/// Where the tests' clocks start (2027-01-15): no test reads the system
/// clock, none waits for it.
const NOW: u64 = 1_800_000_000;

/// Keys of one HS256 secret, tokens living a minute, on a manual clock
/// standing at [`NOW`].
fn keys() -> TokenKeys {
    keys_living(Duration::from_secs(60)).0
}

/// [`keys`] with tokens living `ttl`, and their clock.
fn keys_living(ttl: Duration) -> (TokenKeys, ManualClock) {
    let clock = ManualClock::new(NOW);
    let keys = TokenKeys::new(&[7u8; 32], "rpcguard", "rpcguard", ttl)
        .expect("keys")
        .with_clock(Clock::Manual(clock.clone()));
    (keys, clock)
}

/// Claims that verify with [`keys`] at [`NOW`], changed by `edit`.
fn claims_at_now(edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut claims = serde_json::json!({
        "sub": "alice", "uid": UID, "sid": SID, "iat": NOW, "exp": NOW + 60,
        "iss": "rpcguard", "aud": "rpcguard", "jti": "x"
    });
    edit(&mut claims);
    claims
}

/// `claims` signed with [`keys`]' secret.
fn signed(claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_secret(&[7u8; 32]);
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("encode")
}

#[test]
fn issued_token_verifies() {
    let keys = keys();
    let (token, claims) = keys.issue("alice", UID, SID).expect("issue");
    assert_eq!(keys.verify(&token), Ok(Arc::new(claims)));
}

#[test]
fn short_key_is_refused() {
    let err = TokenKeys::new(&[1u8; 31], "i", "a", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, TokenError::KeyTooShort(31)));
}

#[test]
fn other_key_is_invalid() {
    let (token, _) = keys().issue("alice", UID, SID).expect("issue");
    let other =
        TokenKeys::new(&[8u8; 32], "rpcguard", "rpcguard", Duration::from_secs(60)).expect("keys");
    assert_eq!(other.verify(&token), Err(AuthFailure::InvalidToken));
}

#[test]
fn a_token_expires_when_the_clock_passes_its_exp() {
    let (keys, clock) = keys_living(Duration::from_secs(60));
    let (remembered, claims) = keys.issue("alice", UID, SID).expect("issue");
    assert_eq!(
        (claims.iat, claims.exp),
        (NOW, NOW + 60),
        "times of the keys' clock"
    );
    assert!(keys.verify(&remembered).is_ok());
    // Never verified before its expiry: jsonwebtoken's path, not the memory.
    let (fresh, _) = keys.issue("alice", UID, SID).expect("issue");
    // At `exp` the token is still valid (leeway 0: expired once past it).
    clock.advance(Duration::from_secs(60));
    assert!(keys.verify(&remembered).is_ok(), "at exp");
    clock.advance(Duration::from_secs(1));
    for token in [&remembered, &fresh] {
        assert_eq!(keys.verify(token), Err(AuthFailure::ExpiredToken));
    }
    // The clock set back: valid again (the keys read no other clock).
    clock.set(NOW + 30);
    assert!(keys.verify(&fresh).is_ok());
}

#[test]
fn not_before_and_issued_at_are_read_on_the_keys_clock() {
    let (keys, clock) = keys_living(Duration::from_secs(60));
    let early = signed(&claims_at_now(|c| c["nbf"] = serde_json::json!(NOW + 10)));
    let future = signed(&claims_at_now(|c| c["iat"] = serde_json::json!(NOW + 10)));
    let fractional = signed(&claims_at_now(|c| {
        c["nbf"] = serde_json::json!(NOW as f64 + 9.6)
    }));
    for token in [&early, &future, &fractional] {
        assert_eq!(keys.verify(token), Err(AuthFailure::InvalidToken));
    }
    clock.advance(Duration::from_secs(10));
    for token in [&early, &future, &fractional] {
        assert!(keys.verify(token).is_ok());
    }
    // An `nbf` that is no number of seconds is refused, whatever the time.
    for nbf in [
        serde_json::json!("soon"),
        serde_json::json!(-1),
        serde_json::json!(null),
    ] {
        let token = signed(&claims_at_now(|c| c["nbf"] = nbf.clone()));
        assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken), "{nbf}");
    }
}

#[test]
fn issuer_and_audience_are_checked_after_expiry() {
    let (keys, _clock) = keys_living(Duration::from_secs(60));
    for (claim, other) in [("iss", "someone-else"), ("aud", "another-service")] {
        let wrong = signed(&claims_at_now(|c| c[claim] = serde_json::json!(other)));
        assert_eq!(
            keys.verify(&wrong),
            Err(AuthFailure::InvalidToken),
            "{claim}"
        );
        // Expired and of another issuer or audience: expired first, as
        // jsonwebtoken answered when it checked both.
        let expired = signed(&claims_at_now(|c| {
            c[claim] = serde_json::json!(other);
            c["iat"] = serde_json::json!(NOW - 100);
            c["exp"] = serde_json::json!(NOW - 1);
        }));
        assert_eq!(
            keys.verify(&expired),
            Err(AuthFailure::ExpiredToken),
            "{claim}"
        );
        // Required, and a string.
        let missing = signed(&claims_at_now(|c| {
            c.as_object_mut().map(|c| c.remove(claim));
        }));
        assert_eq!(
            keys.verify(&missing),
            Err(AuthFailure::InvalidToken),
            "{claim}"
        );
        let list = signed(&claims_at_now(|c| {
            c[claim] = serde_json::json!(["rpcguard"])
        }));
        assert_eq!(
            keys.verify(&list),
            Err(AuthFailure::InvalidToken),
            "{claim}"
        );
    }
}

#[test]
fn token_names_the_account_id() {
    let keys = keys();
    let (token, claims) = keys.issue("alice", UID, SID).expect("issue");
    assert_eq!(claims.uid, UID);
    assert_eq!(keys.verify(&token).expect("valid").uid, UID);
    let (other, _) = keys.issue("alice", "another-account", SID).expect("issue");
    assert_eq!(keys.verify(&other).expect("valid").uid, "another-account");
}

#[test]
fn token_without_account_id_is_invalid() {
    let keys = keys();
    let now = NOW;
    let no_sid = serde_json::json!({
        "sub": "alice", "uid": UID, "iat": now, "exp": now + 60,
        "iss": "rpcguard", "aud": "rpcguard", "jti": "x"
    });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &no_sid,
        &EncodingKey::from_secret(&[7u8; 32]),
    )
    .expect("encode");
    assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken));
    let legacy = serde_json::json!({
        "sub": "alice", "sid": SID, "iat": now, "exp": now + 60,
        "iss": "rpcguard", "aud": "rpcguard", "jti": "x"
    });
    let key = EncodingKey::from_secret(&[7u8; 32]);
    let header = Header::new(Algorithm::HS256);
    let token = jsonwebtoken::encode(&header, &legacy, &key).expect("encode");
    assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken));
    let mut empty = legacy.clone();
    empty["uid"] = serde_json::json!("");
    let token = jsonwebtoken::encode(&header, &empty, &key).expect("encode");
    assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken));
    // Expired stays expired, with or without `uid`.
    let mut expired = legacy;
    expired["iat"] = serde_json::json!(now - 60);
    expired["exp"] = serde_json::json!(now - 1);
    let token = jsonwebtoken::encode(&header, &expired, &key).expect("encode");
    assert_eq!(keys.verify(&token), Err(AuthFailure::ExpiredToken));
}

#[test]
fn a_crit_header_is_refused_whatever_it_lists() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let keys = keys();
    let key = EncodingKey::from_secret(&[7u8; 32]);
    let now = NOW;
    let claims = serde_json::json!({
        "sub": "alice", "uid": UID, "sid": SID, "iat": now, "exp": now + 60,
        "iss": "rpcguard", "aud": "rpcguard", "jti": "x"
    });
    // The same header and claims without `crit` verify (the key, the
    // signing and the claims are right).
    let signed = |header: &str| {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).expect("sign");
        format!("{input}.{signature}")
    };
    assert!(keys
        .verify(&signed(r#"{"alg":"HS256","typ":"JWT"}"#))
        .is_ok());
    for header in [
        r#"{"alg":"HS256","typ":"JWT","crit":["exp"],"exp":1}"#,
        r#"{"alg":"HS256","crit":[]}"#,
        r#"{"alg":"HS256","crit":null}"#,
        r#"{"alg":"HS256","cr\u0069t":["b64"],"b64":false}"#,
    ] {
        assert_eq!(
            keys.verify(&signed(header)),
            Err(AuthFailure::InvalidToken),
            "{header}"
        );
    }
    // jsonwebtoken's own `crit` field, too.
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".to_owned()]);
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("encode");
    assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken));
}

fn set_of(alg: KeyAlg) -> KeySet {
    KeySet::generate(alg, NOW).expect("key set")
}

/// Keys of `set`, tokens living a minute, on a manual clock at [`NOW`].
fn keys_of(set: &KeySet) -> TokenKeys {
    keys_of_set_on(set, &ManualClock::new(NOW))
}

fn keys_of_set_on(set: &KeySet, clock: &ManualClock) -> TokenKeys {
    TokenKeys::from_key_set(set, "rpcguard", "rpcguard", Duration::from_secs(60))
        .expect("keys")
        .with_clock(Clock::Manual(clock.clone()))
}

fn header_of(token: &str) -> Header {
    jsonwebtoken::decode_header(token).expect("header")
}

/// A token with this header and valid claims, signed by `key`.
fn forged(header: &Header, key: &EncodingKey) -> String {
    let now = NOW;
    let claims = serde_json::json!({
        "sub": "alice", "uid": UID, "sid": SID, "iat": now, "exp": now + 60,
        "iss": "rpcguard", "aud": "rpcguard", "jti": "x"
    });
    jsonwebtoken::encode(header, &claims, key).expect("encode")
}

#[test]
fn every_algorithm_signs_with_its_kid_and_verifies() {
    for alg in KeyAlg::ALL {
        let set = set_of(alg);
        let keys = keys_of(&set);
        let (token, claims) = keys.issue("alice", UID, SID).expect("issue");
        let header = header_of(&token);
        assert_eq!(header.alg, alg.algorithm());
        assert_eq!(header.kid.as_deref(), Some(set.keys[0].kid.as_str()));
        assert_eq!(keys.verify(&token), Ok(Arc::new(claims)), "{alg}");
        // Another set of the same algorithm does not know that kid.
        assert_eq!(
            keys_of(&set_of(alg)).verify(&token),
            Err(AuthFailure::InvalidToken)
        );
    }
}

#[test]
fn alg_none_is_refused() {
    let keys = keys_of(&set_of(KeyAlg::EdDSA));
    let (token, _) = keys.issue("alice", UID, SID).expect("issue");
    let mut parts = token.split('.');
    let (_, payload) = (parts.next(), parts.next().expect("payload"));
    let kid = keys.signing_kid().expect("kid");
    for alg in ["none", "None", "NONE"] {
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid});
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        for tail in ["", "c2ln"] {
            let unsigned = format!("{header}.{payload}.{tail}");
            assert_eq!(
                keys.verify(&unsigned),
                Err(AuthFailure::InvalidToken),
                "{alg}"
            );
        }
    }
}

#[test]
fn hs256_signed_with_a_public_key_is_refused() {
    for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
        let keys = keys_of(&set_of(alg));
        let jwks = serde_json::to_string(&keys.jwks()).expect("jwks");
        let public = serde_json::to_value(&keys.jwks().keys[0]).expect("jwk");
        let kid = keys.signing_kid().expect("kid");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        // Every form an attacker might feed an HMAC with.
        let secrets = [
            jwks.clone().into_bytes(),
            public.to_string().into_bytes(),
            public["x"].as_str().unwrap_or_default().as_bytes().to_vec(),
            public["n"].as_str().unwrap_or_default().as_bytes().to_vec(),
        ];
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            let token = forged(&header, &EncodingKey::from_secret(secret));
            assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken), "{alg}");
        }
    }
}

#[test]
fn unknown_kid_and_header_pointers_are_refused() {
    let hs = keys_of(&set_of(KeyAlg::HS256));
    let secret = [9u8; 32];
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs256-000000000000".to_owned());
    let token = forged(&header, &EncodingKey::from_secret(&secret));
    assert_eq!(hs.verify(&token), Err(AuthFailure::InvalidToken));
    // No kid: only the legacy key verifies such tokens; this set has none.
    let token = forged(
        &Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(&secret),
    );
    assert_eq!(hs.verify(&token), Err(AuthFailure::InvalidToken));
    // A key of the attacker's, offered through jku / x5u / jwk: ignored.
    let theirs = set_of(KeyAlg::ES256);
    let their_keys = keys_of(&theirs);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = their_keys.signing_kid();
    header.jku = Some("http://127.0.0.1:9/jwks.json".to_owned());
    header.x5u = Some("http://127.0.0.1:9/cert.pem".to_owned());
    header.jwk = their_keys.jwks().keys.first().cloned();
    let material = theirs.keys[0].material().expect("material");
    let token = forged(&header, &EncodingKey::from_ec_der(&material));
    let ours = keys_of(&set_of(KeyAlg::ES256));
    assert_eq!(ours.verify(&token), Err(AuthFailure::InvalidToken));
}

#[test]
fn rotation_keeps_old_tokens_until_the_grace_ends() {
    let now = NOW;
    let mut set = KeySet::of(vec![StoredKey::legacy_hs256(&[7u8; 32], now)]);
    let keys = keys_of(&set);
    // A token from before key sets (no kid) verifies with the legacy key.
    let before = forged(
        &Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(&[7u8; 32]),
    );
    assert!(keys.verify(&before).is_ok());
    let (old, _) = keys.issue("alice", UID, SID).expect("issue");
    let new_kid = set.rotate(KeyAlg::ES256, now).expect("rotate").kid.clone();
    keys.replace_keys(&set).expect("replace");
    assert!(keys.verify(&before).is_ok());
    assert!(keys.verify(&old).is_ok());
    let (new, _) = keys.issue("alice", UID, SID).expect("issue");
    assert_eq!(header_of(&new).kid, Some(new_kid));
    assert!(keys.verify(&new).is_ok());
    // Grace over (retired long ago): the old key verifies nothing.
    set.keys[0].retired = Some(now - 3600);
    keys.replace_keys(&set).expect("replace");
    assert_eq!(keys.verify(&old), Err(AuthFailure::InvalidToken));
    assert_eq!(keys.verify(&before), Err(AuthFailure::InvalidToken));
    assert!(keys.verify(&new).is_ok());
}

/// Which key signs and which verify follows the keys' clock, with no new
/// key set: a switch announced for later happens when the clock gets
/// there, and a retired key's grace ends when the clock passes it.
#[test]
fn signing_and_the_grace_follow_the_clock_without_a_reload() {
    let clock = ManualClock::new(NOW);
    let mut set = KeySet::generate(KeyAlg::EdDSA, NOW).expect("set");
    let old_kid = set.keys[0].kid.clone();
    let new_kid = set
        .rotate_at(KeyAlg::ES256, NOW, NOW + 3)
        .expect("rotate")
        .kid
        .clone();
    let keys = keys_of_set_on(&set, &clock);
    assert_eq!(keys.signing_kid().as_deref(), Some(old_kid.as_str()));
    assert_eq!(
        keys.jwks().keys.len(),
        2,
        "the next key is published already"
    );
    let (old, _) = keys.issue("alice", UID, SID).expect("issue");
    clock.advance(Duration::from_secs(3));
    assert_eq!(keys.signing_kid().as_deref(), Some(new_kid.as_str()));
    let (new, _) = keys.issue("alice", UID, SID).expect("issue");
    assert_eq!(header_of(&new).kid, Some(new_kid));
    // The old key's grace: its retirement, the TTL and the reload slack.
    let grace_end = NOW + 3 + 60 + crate::keys::RELOAD_SLACK.as_secs();
    clock.set(grace_end);
    assert_eq!(keys.jwks().keys.len(), 2);
    assert_eq!(keys.verify(&old), Err(AuthFailure::ExpiredToken));
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(old_kid);
    let material = set.keys[0].material().expect("material");
    let late = forged_at(grace_end, &header, &EncodingKey::from_ed_der(&material));
    assert!(keys.verify(&late).is_ok(), "within the grace");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        keys.verify(&late),
        Err(AuthFailure::InvalidToken),
        "past it"
    );
    assert_eq!(keys.jwks().keys.len(), 1, "and no longer published");
    assert_eq!(
        keys.verify(&new),
        Err(AuthFailure::ExpiredToken),
        "its own exp"
    );
    let (newest, _) = keys.issue("alice", UID, SID).expect("issue");
    assert!(keys.verify(&newest).is_ok());
}

/// [`forged`], issued at `now`.
fn forged_at(now: u64, header: &Header, key: &EncodingKey) -> String {
    let claims = serde_json::json!({
        "sub": "alice", "uid": UID, "sid": SID, "iat": now, "exp": now + 60,
        "iss": "rpcguard", "aud": "rpcguard", "jti": "x"
    });
    jsonwebtoken::encode(header, &claims, key).expect("encode")
}

#[test]
fn jwks_has_public_asymmetric_keys_only() {
    let now = NOW;
    let mut set = KeySet::generate(KeyAlg::HS256, now).expect("set");
    assert!(keys_of(&set).jwks().keys.is_empty());
    for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
        set.rotate(alg, now).expect("rotate");
    }
    let jwks = serde_json::to_value(keys_of(&set).jwks()).expect("json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3);
    for jwk in keys {
        assert_eq!(jwk["use"], "sig");
        assert!(jwk["kid"].is_string() && jwk["alg"].is_string());
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(jwk.get(private).is_none(), "{private} in {jwk}");
        }
    }
    let text = jwks.to_string();
    for key in &set.keys {
        let material = URL_SAFE_NO_PAD.encode(key.material().expect("material"));
        assert!(
            !text.contains(&material[..24]),
            "material of {} leaked",
            key.kid
        );
    }
}

/// Sign and verify cost per algorithm (a note for the lead, not a
/// benchmark): `cargo test --release --lib sign_and_verify_cost --
/// --ignored --nocapture`.
#[test]
#[ignore = "timing note; run with --release --ignored --nocapture"]
fn sign_and_verify_cost_per_algorithm() {
    const ROUNDS: u32 = 200;
    for alg in KeyAlg::ALL {
        let keys = keys_of(&set_of(alg));
        let start = std::time::Instant::now();
        let tokens: Vec<String> = (0..ROUNDS)
            .map(|_| keys.issue("alice", UID, SID).expect("issue").0)
            .collect();
        let sign = start.elapsed() / ROUNDS;
        let start = std::time::Instant::now();
        for token in &tokens {
            // A fresh key set each time would cost key decoding; clear
            // the remembered tokens instead so every verify does the work.
            keys.verified.lock().expect("lock").clear();
            keys.verify(token).expect("verify");
        }
        let verify = start.elapsed() / ROUNDS;
        for token in &tokens {
            keys.verify(token).expect("verify");
        }
        let start = std::time::Instant::now();
        for token in &tokens {
            keys.verify(token).expect("verify");
        }
        let remembered = start.elapsed() / ROUNDS;
        eprintln!(
            "{alg:>5}: sign {sign:>10.1?}  verify {verify:>10.1?}  remembered {remembered:>8.1?}"
        );
    }
}
