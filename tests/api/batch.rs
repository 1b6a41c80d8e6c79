//! Batches are checked call by call; notifications get no body.

use serde_json::{json, Value};

use crate::helpers::*;

fn by_id(batch: &Value) -> std::collections::BTreeMap<i64, Value> {
    batch
        .as_array()
        .expect("batch answer is an array")
        .iter()
        .map(|entry| (entry["id"].as_i64().expect("id"), entry.clone()))
        .collect()
}

#[tokio::test]
async fn batch_mixing_public_secured_denied_and_unknown() {
    let app = TestApp::spawn().await;
    let token = app.signed_in("alice").await;
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"rpc.discover"},
        {"jsonrpc":"2.0","id":2,"method":"get_caller"},
        {"jsonrpc":"2.0","id":3,"method":"require_scopes"},
        {"jsonrpc":"2.0","id":4,"method":"no_such_method"},
        {"jsonrpc":"2.0","id":5,"method":"sign_up","params":["bob", PASSWORD]},
        {"jsonrpc":"2.0","method":"get_caller"}
    ]);
    let (status, body) = app
        .post_raw(batch.to_string(), bearer_headers(Some(&token)))
        .await;
    assert_eq!(status, 200);
    let answers = by_id(&body);
    assert_eq!(answers.len(), 5, "the notification gets no answer: {body}");
    assert_eq!(answers[&1]["result"]["openrpc"], "1.3.2");
    assert_eq!(answers[&2]["result"]["username"], "alice");
    assert_eq!(answers[&3]["error"]["code"], -32099);
    assert_eq!(answers[&4]["error"]["code"], -32601);
    assert_eq!(answers[&5]["result"]["username"], "bob");
}

#[tokio::test]
async fn batch_of_secured_calls_without_token_runs_none() {
    let app = TestApp::spawn().await;
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"get_caller"},
        {"jsonrpc":"2.0","id":2,"method":"require_scopes"},
    ]);
    let (status, body) = app.post_raw(batch.to_string(), Default::default()).await;
    assert_eq!(status, 200);
    for (_, answer) in by_id(&body) {
        assert_eq!(answer["error"]["code"], -32001, "{answer}");
        assert_eq!(answer["error"]["data"]["reason"], "missing_token");
    }
}

#[tokio::test]
async fn batch_over_the_limit_is_one_error() {
    let app = TestApp::spawn().await;
    let calls: Vec<Value> = (0..101)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"rpc.discover"}))
        .collect();
    let (status, body) = app
        .post_raw(Value::Array(calls).to_string(), Default::default())
        .await;
    assert_eq!(status, 200);
    assert!(body.is_object(), "one error object, not a batch: {body}");
    assert!(body["error"]["code"].is_i64(), "{body}");
}

#[tokio::test]
async fn notifications_get_no_body() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post_raw(
            r#"{"jsonrpc":"2.0","method":"sign_up","params":["alice","correct horse battery"]}"#,
            Default::default(),
        )
        .await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, body) = app
        .post_raw(r#"[{"jsonrpc":"2.0","method":"get_caller"},{"jsonrpc":"2.0","method":"rpc.discover"}]"#, Default::default())
        .await;
    assert_eq!((status, body), (204, Value::Null));
}

#[tokio::test]
async fn auth_errors_echo_the_request_id() {
    let app = TestApp::spawn().await;
    let (_, body) = app
        .post_raw(
            r#"{"jsonrpc":"2.0","id":"abc-42","method":"get_caller"}"#,
            Default::default(),
        )
        .await;
    assert_eq!(body["id"], "abc-42");
    assert_eq!(body["error"]["code"], -32001);
}

/// Found by the `request` fuzz target: an empty body was answered 400.
#[tokio::test]
async fn bodies_that_are_not_json_get_a_parse_error_with_200() {
    let app = TestApp::spawn().await;
    for body in ["", "   ", "garbage", "42", "\"text\"", "{", "[1,"] {
        let (status, answer) = app.post_raw(body, Default::default()).await;
        assert_eq!(status, 200, "{body:?}: {answer}");
        let error = if answer.is_array() {
            &answer[0]["error"]
        } else {
            &answer["error"]
        };
        let code = error["code"].as_i64().unwrap_or_default();
        assert!(code == -32700 || code == -32600, "{body:?}: {answer}");
    }
}
