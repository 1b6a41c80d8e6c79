//! Token verification and `Authorization` parsing on arbitrary bytes: never
//! a panic, and only a token signed by our key with valid claims may pass.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use rpcguard_accounts::auth::token::TokenKeys;
use rpcguard::Credentials;

fn keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        TokenKeys::new(b"fuzzing-key-fuzzing-key-fuzzing-key!", "rpcguard", "rpcguard", Duration::from_secs(60))
            .expect("keys")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(claims) = keys().verify(text) {
            // Passing verification without our key would be a forgery.
            let (reissued, _) = keys().issue(&claims.sub, &claims.uid, &claims.sid).expect("issue");
            assert!(!reissued.is_empty());
            assert_eq!(claims.iss, "rpcguard");
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        let credentials = Credentials::new(headers, None, None);
        if let Ok(Some(token)) = credentials.bearer_token() {
            let _ = keys().verify(token);
        }
    }
});
