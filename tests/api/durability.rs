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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_flight_finish_then_exits_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().display().to_string();
    let mut server = ServerProcess::start(&["--data-dir", &data_dir, "--bcrypt-cost", "12"], &[]);
    let client = server.client(None);
    let in_flight = tokio::spawn(async move {
        call(
            &client,
            "sign_up",
            json!({"username": "late", "password": PASSWORD}),
        )
        .await
    });
    // Give the request time to reach the server and its bcrypt queue, even
    // on a loaded machine (at 100 ms it once had not been sent yet); the
    // hash at cost 12 in a debug build takes far longer than this.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.sigterm();
    let answer = in_flight.await.expect("join");
    assert_eq!(
        answer.expect("the call in flight completes")["username"],
        "late"
    );
    let exit = tokio::task::spawn_blocking(move || server.wait_for_exit())
        .await
        .expect("join");
    assert!(exit.expect("exited").success());
}
