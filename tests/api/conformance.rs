//! JSON-RPC 2.0, section by section (https://www.jsonrpc.org/specification),
//! over HTTP and over a WebSocket session. Each test is named after the
//! section it holds us to; the specification's own examples are adapted to
//! our methods (`rpc.discover`, `sign_up`, `get_caller`).

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::*;

/// One app, one WebSocket session, raw bodies on both transports.
struct Peer {
    app: TestApp,
    ws: TcpStream,
}

impl Peer {
    async fn new() -> Peer {
        let app = TestApp::spawn().await;
        let ws = ws_connect(app.addr, "").await;
        Peer { app, ws }
    }

    /// The HTTP answer to `body`, as sent: `None` for 204.
    async fn http_text(&self, body: &str) -> Option<String> {
        let response = self
            .app
            .http
            .post(&self.app.url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        match status {
            204 => None,
            200 => Some(text),
            other => panic!("HTTP {other} for {body}: {text}"),
        }
    }

    /// The WebSocket answer to `body`, as sent: `None` when there is none.
    /// A marker request follows `body`; calls of a session run
    /// concurrently, so the answers may come in either order. When an
    /// answer is `expected`, it is waited for (10 s) however long after the
    /// marker's it comes (a sign_up runs bcrypt, slow on a loaded machine);
    /// otherwise no answer is concluded when the marker's has come and
    /// nothing else within 300 ms.
    async fn ws_text(&mut self, body: &str, expected: bool) -> Option<String> {
        let marker = r#"{"jsonrpc":"2.0","id":"marker","method":"rpc.discover"}"#;
        for text in [body, marker] {
            self.ws
                .write_all(&client_frame(0x1, true, text.as_bytes()))
                .await
                .expect("send");
        }
        let mut answer = None;
        let mut marker_seen = false;
        while answer.is_none() || !marker_seen {
            let wait = if marker_seen && !expected {
                300
            } else {
                10_000
            };
            let frame = tokio::time::timeout(
                std::time::Duration::from_millis(wait),
                server_frame(&mut self.ws),
            );
            let Ok((opcode, payload)) = frame.await else {
                assert!(marker_seen, "no answer to the marker");
                assert!(!expected, "no answer to {body} within 10 s");
                break;
            };
            if opcode != 0x1 {
                continue;
            }
            let text = String::from_utf8(payload).expect("utf8");
            let value: Value = serde_json::from_str(&text).expect("json");
            if value.get("id") == Some(&json!("marker")) && !marker_seen {
                marker_seen = true;
            } else {
                assert!(answer.is_none(), "two answers to {body}");
                answer = Some(text);
            }
        }
        answer
    }

    /// The HTTP answer to `body`, parsed: `None` for 204.
    async fn http(&self, body: &str) -> Option<Value> {
        self.http_text(body)
            .await
            .map(|t| serde_json::from_str(&t).expect("json"))
    }

    /// The WebSocket answer to `body`, expected or not.
    async fn ws(&mut self, body: &str, expected: bool) -> Option<Value> {
        self.ws_text(body, expected)
            .await
            .map(|t| serde_json::from_str(&t).expect("json"))
    }

    /// The answers over both transports, which must agree.
    async fn both(&mut self, body: &str) -> Option<Value> {
        let over_http = self.http(body).await;
        // HTTP answers 204 exactly when there is nothing to answer.
        let over_ws = self.ws(body, over_http.is_some()).await;
        assert_eq!(
            over_http.is_some(),
            over_ws.is_some(),
            "HTTP and WebSocket disagree on {body}"
        );
        if let (Some(h), Some(w)) = (&over_http, &over_ws) {
            assert_eq!(strip_results(h), strip_results(w), "{body}");
        }
        over_http
    }
}

/// The answer without results (they may differ: e.g. a created account).
fn strip_results(answer: &Value) -> Value {
    match answer {
        Value::Array(items) => Value::Array(items.iter().map(strip_results).collect()),
        Value::Object(map) => {
            let mut map = map.clone();
            if map.contains_key("result") {
                map.insert("result".into(), json!("<result>"));
            }
            Value::Object(map)
        }
        other => other.clone(),
    }
}

fn code(answer: &Value) -> i64 {
    answer["error"]["code"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_4_request_ids_are_echoed_exactly_as_sent() {
    let mut peer = Peer::new().await;
    for id in [
        "1",
        "0",
        "-1",
        "1.5",
        "1e3",
        "-0",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345678901234567890",
        "\"abc\"",
        "\"\"",
        "null",
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"rpc.discover"}}"#);
        for answer in [peer.http_text(&body).await, peer.ws_text(&body, true).await] {
            let text = answer.expect("an answer");
            assert!(
                text.contains(&format!(r#""id":{id}"#)),
                "id {id} came back as {}",
                &text[..text.len().min(80)]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_4_a_request_with_an_unusual_id_is_executed() {
    let mut peer = Peer::new().await;
    let body = r#"{"jsonrpc":"2.0","id":1.5,"method":"sign_up","params":["ids15","correct horse battery"]}"#;
    let answer = peer.http(body).await.expect("answer");
    assert_eq!(answer["result"]["username"], "ids15", "{answer}");
    let answer = peer.ws(body, true).await.expect("answer");
    assert_eq!(code(&answer), -32003, "executed again: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_4_ids_of_another_type_make_an_invalid_request() {
    let mut peer = Peer::new().await;
    for id in ["{}", "[1]", "true", "false", r#"{"a":1}"#] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"sign_up","params":["bad{}","correct horse battery"]}}"#,
            id.len()
        );
        let answer = peer.both(&body).await.expect("an answer");
        assert_eq!(code(&answer), -32600, "{answer}");
        assert_eq!(answer["id"], Value::Null);
    }
    // Nothing was executed.
    assert_eq!(peer.app.store.count_users().await.expect("count"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_4_1_notifications_are_not_answered() {
    let mut peer = Peer::new().await;
    let body = r#"{"jsonrpc":"2.0","method":"rpc.discover"}"#;
    assert_eq!(peer.both(body).await, None);
    let body = r#"{"jsonrpc":"2.0","method":"no_such_method","params":[1]}"#;
    assert_eq!(peer.both(body).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_4_2_params_by_position_and_by_name() {
    let mut peer = Peer::new().await;
    let by_name = r#"{"jsonrpc":"2.0","id":1,"method":"get_caller","params":{}}"#;
    let by_position = r#"{"jsonrpc":"2.0","id":2,"method":"get_caller","params":[]}"#;
    let omitted = r#"{"jsonrpc":"2.0","id":3,"method":"get_caller"}"#;
    for body in [by_name, by_position, omitted] {
        let answer = peer.both(body).await.expect("answer");
        assert_eq!(
            code(&answer),
            -32001,
            "reached the security check: {answer}"
        );
    }
    let not_structured = r#"{"jsonrpc":"2.0","id":4,"method":"sign_up","params":"x"}"#;
    let answer = peer.both(not_structured).await.expect("answer");
    assert!([-32600, -32602].contains(&code(&answer)), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_5_response_object_has_jsonrpc_id_and_result_or_error() {
    let mut peer = Peer::new().await;
    for body in [
        r#"{"jsonrpc":"2.0","id":7,"method":"rpc.discover"}"#,
        r#"{"jsonrpc":"2.0","id":8,"method":"get_caller"}"#,
    ] {
        let answer = peer.both(body).await.expect("answer");
        assert_eq!(answer["jsonrpc"], "2.0");
        let has_result = answer.get("result").is_some();
        let has_error = answer.get("error").is_some();
        assert!(
            has_result != has_error,
            "exactly one of result/error: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_5_1_error_codes() {
    let mut peer = Peer::new().await;
    let cases = [
        (
            r#"{"jsonrpc":"2.0","method":"foobar,"params":"bar","baz]"#,
            -32700,
        ),
        (r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":"1","method":"foobar"}"#, -32601),
        (
            r#"{"jsonrpc":"2.0","id":"1","method":"sign_up","params":[1]}"#,
            -32602,
        ),
    ];
    for (body, expected) in cases {
        let answer = peer.both(body).await.expect("answer");
        assert_eq!(code(&answer), expected, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_6_batch_examples_from_the_specification() {
    let mut peer = Peer::new().await;
    // An invalid JSON batch: one parse error.
    let answer = peer
        .both(r#"[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"},{"jsonrpc":"2.0","method""#)
        .await
        .expect("answer");
    assert_eq!(code(&answer), -32700, "{answer}");
    // An empty array: one invalid request.
    let answer = peer.both("[]").await.expect("answer");
    assert_eq!(code(&answer), -32600, "{answer}");
    // A non-empty invalid batch: one error per entry.
    let answer = peer.both("[1]").await.expect("answer");
    assert_eq!(answer.as_array().map(Vec::len), Some(1), "{answer}");
    let answer = peer.both("[1,2,3]").await.expect("answer");
    let entries = answer.as_array().expect("array");
    assert_eq!(entries.len(), 3);
    assert!(entries
        .iter()
        .all(|e| code(e) == -32600 && e["id"].is_null()));
    // The mixed example, adapted: calls, a notification, an invalid entry,
    // an unknown method, and unusual ids.
    let batch = r#"[
        {"jsonrpc":"2.0","method":"rpc.discover","id":"1"},
        {"jsonrpc":"2.0","method":"get_caller"},
        {"jsonrpc":"2.0","method":"get_caller","id":-2},
        {"foo":"boo"},
        {"jsonrpc":"2.0","method":"foo.get","params":{"name":"myself"},"id":"5"},
        {"jsonrpc":"2.0","method":"rpc.discover","id":9.5},
        {"jsonrpc":"2.0","method":"rpc.discover","id":true}
    ]"#;
    let answer = peer.both(batch).await.expect("answer");
    let entries = answer.as_array().expect("array");
    assert_eq!(
        entries.len(),
        6,
        "the notification is not answered: {answer}"
    );
    let by_id = |id: Value| {
        entries
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no answer with id {id}"))
    };
    assert!(by_id(json!("1"))["result"].is_object());
    assert_eq!(code(by_id(json!(-2))), -32001);
    assert_eq!(code(by_id(json!("5"))), -32601);
    assert!(by_id(json!(9.5))["result"].is_object());
    let invalid: Vec<_> = entries.iter().filter(|e| e["id"].is_null()).collect();
    assert_eq!(invalid.len(), 2, "{answer}");
    assert!(invalid.iter().all(|e| code(e) == -32600));
    // All notifications: nothing comes back.
    let answer = peer
        .both(r#"[{"jsonrpc":"2.0","method":"rpc.discover"},{"jsonrpc":"2.0","method":"get_caller"}]"#)
        .await;
    assert_eq!(answer, None);
}
