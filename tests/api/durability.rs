//! Restarts keep users and tokens; concurrent sign-ups make one account.

use serde_json::json;

use crate::both_stores;
use crate::helpers::*;

both_stores! {
    async fn restart_keeps_users_and_tokens(app) {
        let token = app.signed_in("alice").await;
        let app = app.restart().await;
        assert_eq!(app.call(Some(&token), "get_caller", json!({})).await.expect("token survives")["username"], "alice");
        app.sign_in("alice", PASSWORD).await.expect("password survives");
    }

    async fn concurrent_duplicate_sign_up_makes_one_account(app) {
        let client = app.client(None);
        let attempts = (0..50).map(|i| {
            let client = client.clone();
            // Mixed case: one account, case-insensitively.
            let name = if i % 2 == 0 { "Racer" } else { "racer" };
            async move { call(&client, "sign_up", json!({"username": name, "password": PASSWORD})).await }
        });
        let results = futures::future::join_all(attempts).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let taken = results.iter().filter(|r| matches!(r, Err(e) if e.code() == -32003)).count();
        assert_eq!((ok, taken), (1, 49), "{results:?}");
        assert_eq!(app.store.count_users().await.expect("count"), 1);
    }
}
