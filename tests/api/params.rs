//! Params by name and by position; missing, extra and ill-typed params.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn by_name_and_by_position() {
    let app = TestApp::spawn().await;
    let client = app.client(None);
    let by_name = call(
        &client,
        "sign_up",
        json!({ "username": "alice", "password": PASSWORD }),
    )
    .await
    .expect("by name");
    let by_position = call_positional(&client, "sign_up", vec![json!("bob"), json!(PASSWORD)])
        .await
        .expect("by position");
    assert_eq!(by_name["username"], "alice");
    assert_eq!(by_position["username"], "bob");
    let token = call_positional(&client, "sign_in", vec![json!("bob"), json!(PASSWORD)])
        .await
        .expect("sign_in");
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["expires_in"], 900);
}

#[tokio::test]
async fn missing_extra_and_wrong_params() {
    let app = TestApp::spawn().await;
    let client = app.client(None);
    let cases = [
        call(&client, "sign_up", json!({ "username": "alice" })).await,
        call(&client, "sign_up", json!({})).await,
        call(
            &client,
            "sign_up",
            json!({ "username": "alice", "password": PASSWORD, "admin": true }),
        )
        .await,
        call_positional(&client, "sign_up", vec![json!("alice")]).await,
        call_positional(
            &client,
            "sign_up",
            vec![json!("alice"), json!(PASSWORD), json!("extra")],
        )
        .await,
        call(
            &client,
            "sign_up",
            json!({ "username": 5, "password": PASSWORD }),
        )
        .await,
        call(
            &client,
            "sign_up",
            json!({ "username": "alice", "password": null }),
        )
        .await,
        call(
            &client,
            "sign_up",
            json!({ "username": {"a": 1}, "password": PASSWORD }),
        )
        .await,
        call(
            &client,
            "sign_in",
            json!({ "username": "alice", "password": ["x"] }),
        )
        .await,
    ];
    for result in cases {
        assert_error(result, -32602, "Invalid params");
    }
    assert_eq!(app.store.count_users().await.expect("count"), 0);
    // A method without params refuses params too.
    let token = app.signed_in("carol").await;
    assert_error(
        app.call(Some(&token), "get_caller", json!({ "x": 1 }))
            .await,
        -32602,
        "Invalid params",
    );
    // …but accepts none, [] and {}.
    let (status, body) = app
        .post_raw(
            r#"{"jsonrpc":"2.0","id":1,"method":"get_caller","params":[]}"#,
            bearer_headers(Some(&token)),
        )
        .await;
    assert_eq!(
        (status, &body["result"]["username"]),
        (200, &json!("carol"))
    );
}

#[tokio::test]
async fn missing_param_error_names_the_param() {
    let app = TestApp::spawn().await;
    let err = app
        .call(None, "sign_in", json!({ "username": "alice" }))
        .await
        .expect_err("missing");
    assert!(
        err.data().expect("data").get().contains("password"),
        "{err:?}"
    );
}
