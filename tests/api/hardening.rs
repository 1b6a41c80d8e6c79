//! Issue 16, row 8: an account's tokens never pass for a later account of
//! the same name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::both_stores;
use crate::helpers::*;

/// Sleeps until just after the next whole second of the wall clock.
async fn next_second() {
    let into = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let left = 1_000_000_000 - u64::from(into);
    tokio::time::sleep(Duration::from_nanos(left) + Duration::from_millis(5)).await;
}

both_stores! {
    // Row 8. The old rule refused a token issued before its account's
    // `created_at`, in whole seconds: an account deleted and re-created in
    // the same second as the old token was issued accepted that token. The
    // sequence takes milliseconds; it is retried (with a fresh name) in the
    // rare case it straddles a second, so the same-second case is always
    // the one tested.
    async fn a_recreated_account_refuses_the_old_accounts_tokens(app) {
        for attempt in 0..5 {
            let name = format!("alice{attempt}");
            let username = rpcguard::Username::parse(name.as_str()).expect("valid");
            next_second().await;
            let old = app.signed_in(&name).await;
            let session = app.ws(Some(&old)).await;
            assert_eq!(call(&session, "get_caller", json!({})).await.expect("old token")["username"], name.as_str());
            assert!(app.store.delete_user(&username).await.expect("delete"));
            let again = app.sign_up(&name, PASSWORD).await.expect("re-create");
            let iat = token_claims(&old)["iat"].as_i64().expect("iat");
            if again["created_at"] != rpcguard::store::format_rfc3339(iat) {
                continue; // straddled a second: try again
            }
            // The old account's token, on HTTP and on the session it opened.
            assert_unauthenticated(app.call(Some(&old), "get_caller", json!({})).await, "invalid_token");
            assert_unauthenticated(call(&session, "get_caller", json!({})).await, "invalid_token");
            assert_unauthenticated(call(&session, "get_caller", json!({})).await, "invalid_token");
            // The new account's own token works on both.
            let new = app.sign_in(&name, PASSWORD).await.expect("sign in")["access_token"]
                .as_str()
                .expect("token")
                .to_owned();
            assert_ne!(token_claims(&new)["uid"], token_claims(&old)["uid"]);
            assert_eq!(app.call(Some(&new), "get_caller", json!({})).await.expect("new token")["username"], name.as_str());
            let fresh = app.ws(Some(&new)).await;
            assert_eq!(call(&fresh, "get_caller", json!({})).await.expect("new session")["username"], name.as_str());
            return;
        }
        panic!("sign_up, sign_in, delete and sign_up never fit in one second");
    }
}
