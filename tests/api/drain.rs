//! The shutdown drain against a real process (`examples/graceful_shutdown`):
//! on SIGTERM `/ready` turns 503 at once while calls still work, the
//! listener closes after the drain delay (connections refused), a call
//! still running at the grace deadline is answered with the JSON-RPC error
//! and its id, a handler watching the drain answers early, and WebSocket
//! sessions close with 1001.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

const DRAIN: Duration = Duration::from_millis(2_000);
const GRACE: Duration = Duration::from_millis(1_500);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

async fn post(url: &str, body: Value) -> reqwest::Result<Value> {
    client().post(url).json(&body).send().await?.json().await
}

/// Reads frames until a close frame; its code. Text frames seen on the
/// way are pushed to `texts`.
async fn close_code(ws: &mut tokio::net::TcpStream, texts: &mut Vec<String>) -> u16 {
    loop {
        let (opcode, payload) = server_frame(ws).await;
        match opcode {
            0x1 => texts.push(String::from_utf8(payload).expect("utf8")),
            0x8 => return u16::from_be_bytes([payload[0], payload[1]]),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_refuses_then_cuts_off_stragglers() {
    let mut server = ExampleProcess::start("graceful_shutdown", |c| {
        c.env("ADDR", "127.0.0.1:0")
            .env("DRAIN_DELAY_MS", DRAIN.as_millis().to_string())
            .env("SHUTDOWN_GRACE_MS", GRACE.as_millis().to_string())
    });
    let url = server.url.clone();
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("addr");
    let ready = client()
        .get(format!("{url}ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.expect("json"),
        json!({"ready": true})
    );

    // In flight at SIGTERM: a slow HTTP call, a long poll, a slow call on a
    // WebSocket session, and an idle session.
    let slow = tokio::spawn(post_timed(
        url.clone(),
        json!({"jsonrpc":"2.0","id":7,"method":"sleep","params":{"ms":60_000}}),
    ));
    let poll = tokio::spawn(post_timed(
        url.clone(),
        json!({"jsonrpc":"2.0","id":8,"method":"long_poll","params":{"ms":60_000}}),
    ));
    let mut busy_ws = ws_connect(addr, "").await;
    busy_ws
        .write_all(&client_frame(
            0x1,
            true,
            br#"{"jsonrpc":"2.0","id":9,"method":"sleep","params":{"ms":60000}}"#,
        ))
        .await
        .expect("send");
    let mut idle_ws = ws_connect(addr, "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // SAFETY: kill sends a signal to our own child.
    let sent = unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM");
    let term = Instant::now();

    // At once: not ready, still alive, still serving (new connections too).
    let ready = client()
        .get(format!("{url}ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.expect("json"),
        json!({"ready": false, "why": ["draining"]})
    );
    let health = client()
        .get(format!("{url}health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let quick = post(
        &url,
        json!({"jsonrpc":"2.0","id":1,"method":"sleep","params":{"ms":10}}),
    )
    .await
    .expect("served while draining");
    assert_eq!(quick["result"], 10);
    assert!(term.elapsed() < DRAIN, "checked within the drain delay");

    // The long poll saw the drain and answered early.
    let (polled, at) = poll.await.expect("join").expect("long poll answered");
    assert_eq!(polled["result"], json!({"draining": true}), "{polled}");
    assert!(at < DRAIN, "answered at {at:?}");

    // After the delay the listener is closed: connections are refused.
    let refused_at = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(err) => {
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
                break term.elapsed();
            }
            Ok(_) => {
                assert!(
                    term.elapsed() < DRAIN + Duration::from_secs(2),
                    "still accepting"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        refused_at >= DRAIN - Duration::from_millis(100),
        "refused before the drain delay: {refused_at:?}"
    );

    // The idle session closes with 1001 when the listener closes.
    let mut texts = Vec::new();
    let code = tokio::time::timeout(Duration::from_secs(5), close_code(&mut idle_ws, &mut texts))
        .await
        .expect("idle session closed");
    assert_eq!(code, 1001);

    // The slow calls are answered at the grace deadline with -32603 and
    // their ids; the busy session then closes with 1001.
    let (answer, at) = slow.await.expect("join").expect("straggler answered");
    assert_eq!(answer["id"], 7, "{answer}");
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    assert_eq!(answer["error"]["data"], json!({"reason": "shutting_down"}));
    let deadline = DRAIN + GRACE;
    assert!(
        at >= deadline - Duration::from_millis(200) && at < deadline + Duration::from_secs(2),
        "answered at {at:?}, deadline {deadline:?}"
    );
    let mut texts = Vec::new();
    let code = tokio::time::timeout(Duration::from_secs(5), close_code(&mut busy_ws, &mut texts))
        .await
        .expect("busy session closed");
    assert_eq!(code, 1001);
    let ws_answer: Value = serde_json::from_str(texts.first().expect("an answer")).expect("json");
    assert_eq!(ws_answer["id"], 9, "{ws_answer}");
    assert_eq!(ws_answer["error"]["code"], -32603, "{ws_answer}");

    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the process exits after the deadline");
    assert!(status.success(), "{status}");
}

/// POSTs `body` and returns the answer with the time it took from now.
async fn post_timed(url: String, body: Value) -> reqwest::Result<(Value, Duration)> {
    let started = Instant::now();
    let answer = post(&url, body).await?;
    // Measured from SIGTERM by the caller: the calls start ~300 ms before.
    Ok((
        answer,
        started.elapsed().saturating_sub(Duration::from_millis(300)),
    ))
}
