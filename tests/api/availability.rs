//! Availability under hostile clients (issue 16): no unauthenticated client
//! can exhaust the server's memory or connection slots. Each test runs a
//! real `rpcguard serve` process, attacks it over raw sockets, and measures
//! what it costs the server from /proc.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

const SECRET: &str = "availability-suite-signing-key-0123456789";

fn start(args: &[&str]) -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    // A fresh folder, created (0700) by the server itself.
    let data_dir = dir.path().join("data").display().to_string();
    let mut all = vec!["--data-dir", data_dir.as_str()];
    all.extend_from_slice(args);
    let server = ServerProcess::start(&all, &[("RPCGUARD_SECRET", SECRET)]);
    (server, dir)
}

/// The resident set of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from(from), 0))
        .expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// True when the server closes `stream` (EOF or reset) within `limit`;
/// whatever it sent before is ignored.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `GET /health` from `from`, answered 200 within `limit`.
async fn health_from(from: [u8; 4], addr: SocketAddr, limit: Duration) -> bool {
    let check = async {
        let mut stream = connect_from(from, addr).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(tokio::time::timeout(limit, check).await, Ok(Some(true)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_never_reads_its_answers_cannot_grow_memory() {
    let (server, _dir) = start(&[]);
    let pid = server.child.id();
    let before = rss_kib(pid);
    let mut ws = ws_connect(server.addr, "").await;
    let batch: Vec<Value> = (0..100)
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "rpc.discover"}))
        .collect();
    let frame = client_frame(0x1, true, json!(batch).to_string().as_bytes());

    // Send batches without ever reading: until 22 MB are sent, or the
    // server has stopped reading (a write blocked for 2 s).
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..200 {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    let mut sent = 0usize;
    let started = Instant::now();
    while sent < 22_000_000 && started.elapsed() < Duration::from_secs(15) {
        match tokio::time::timeout(Duration::from_secs(2), ws.write_all(&frame)).await {
            Ok(Ok(())) => sent += frame.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    assert!(
        health_from([127, 0, 0, 2], server.addr, Duration::from_secs(2)).await,
        "/health answers while the session is stuck"
    );
    let peak = sampler.await.expect("sampler");
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "sent {:.1} MB in {:?} before back-pressure; RSS {} KiB -> peak {} KiB",
        sent as f64 / 1e6,
        started.elapsed(),
        before,
        peak
    );
    // 16 calls in flight x (6.6 KB batch + 1.5 MB answer) plus buffers;
    // before the fix this grew past 2 GiB.
    assert!(grown_mib < 96, "RSS grew by {grown_mib} MiB");
    assert!(
        sent < 22_000_000,
        "the server kept reading: no back-pressure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_unfinished_connections_are_cut_and_cannot_take_every_slot() {
    let (server, _dir) = start(&[
        "--header-timeout",
        "2",
        "--body-timeout",
        "2",
        "--max-connections",
        "64",
        "--max-connections-per-ip",
        "0",
    ]);
    let addr = server.addr;
    // Three ways to hold a slot without finishing a request, and a
    // keep-alive connection left idle after its answer; 16 of each.
    // (The HTTP/2 preface is refused at once: `http2_is_refused_at_once`.)
    let openings: [&[u8]; 4] = [
        b"",
        b"P",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
    ];
    let mut held = Vec::new();
    for opening in openings {
        for _ in 0..16 {
            let mut stream = connect_from([127, 0, 0, 1], addr).await;
            stream.write_all(opening).await.expect("write");
            held.push((opening, stream));
        }
    }
    let started = Instant::now();
    // Every slot is taken by 127.0.0.1: a health check from another
    // address gets a reserve slot at once; 127.0.0.1 gets nothing more.
    assert!(
        health_from([127, 0, 0, 2], addr, Duration::from_secs(1)).await,
        "/health from another address while the slots are taken"
    );
    let mut extra = connect_from([127, 0, 0, 1], addr).await;
    assert!(
        closed_within(&mut extra, Duration::from_secs(1)).await,
        "the 65th connection of the same address is refused at once"
    );
    // Each held socket is closed by the server within the deadline.
    for (opening, mut stream) in held {
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)).await,
            "a connection that sent {:?} was not cut",
            String::from_utf8_lossy(opening)
        );
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(health_from([127, 0, 0, 1], addr, Duration::from_secs(1)).await);
    let log = server.log();
    assert!(
        !log.contains(" WARN "),
        "anonymous clients wrote warnings:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_more_than_its_share_of_connections() {
    let (server, _dir) = start(&["--max-connections-per-ip", "4"]);
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    let mut fifth = connect_from([127, 0, 0, 1], addr).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), fifth.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(health_from([127, 0, 0, 2], addr, Duration::from_secs(1)).await);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(health_from([127, 0, 0, 1], addr, Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_refused_at_once() {
    let (server, _dir) = start(&[]);
    let mut stream = connect_from([127, 0, 0, 1], server.addr).await;
    // The HTTP/2 preface and an empty SETTINGS frame.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).await.expect("preface");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was closed");
    // No HTTP/2 SETTINGS frame came back (an HTTP/1.1 error or nothing).
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_keep_their_credentials_not_every_header() {
    let (server, _dir) = start(&["--max-connections-per-ip", "0"]);
    let pid = server.child.id();
    // 48 KiB of headers that no security scheme reads.
    let junk: String = (0..12)
        .map(|i| format!("x-junk-{i}: {}\r\n", "j".repeat(4096)))
        .collect();
    let mut warm = ws_connect(server.addr, &junk).await;
    ws_exchange(
        &mut warm,
        r#"{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}"#,
    )
    .await;
    let before = rss_kib(pid);
    let mut sessions = Vec::new();
    for _ in 0..300 {
        sessions.push(ws_connect(server.addr, &junk).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_session = (rss_kib(pid).saturating_sub(before)) / 300;
    eprintln!("{per_session} KiB per idle WebSocket session with 48 KiB of headers");
    // Before the fix each session kept a copy of all its headers (421 KiB
    // per session with large headers).
    assert!(per_session < 32, "{per_session} KiB per session");
    // The sessions still work.
    let last = sessions.last_mut().expect("a session");
    let answer = ws_exchange(last, r#"{"jsonrpc":"2.0","id":2,"method":"get_caller"}"#).await;
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["error"]["data"]["reason"], "missing_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_fragmented_message_closes_the_session_with_1009() {
    let (server, _dir) = start(&["--max-body-bytes", "1000"]);
    let mut ws = ws_connect(server.addr, "").await;
    // Two fragments of 800 bytes: each under the limit, together over it.
    let half = vec![b' '; 800];
    ws.write_all(&client_frame(0x1, false, &half))
        .await
        .expect("first fragment");
    let _ = ws.write_all(&client_frame(0x0, true, &half)).await;
    let (opcode, payload) = tokio::time::timeout(Duration::from_secs(2), server_frame(&mut ws))
        .await
        .expect("a close frame");
    assert_eq!(opcode, 0x8, "close frame");
    assert_eq!(&payload[..2], &1009u16.to_be_bytes(), "code 1009");
    assert!(closed_within(&mut ws, Duration::from_secs(2)).await);
    // A new session works.
    let mut ws = ws_connect(server.addr, "").await;
    ws_exchange(
        &mut ws,
        r#"{"jsonrpc":"2.0","id":3,"method":"rpc.discover"}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_sessions_are_pinged_and_closed() {
    let (server, _dir) = start(&["--ws-ping-interval", "1", "--ws-idle-timeout", "2"]);
    let mut ws = ws_connect(server.addr, "").await;
    let started = Instant::now();
    // A ping comes first; a client that never answers is closed (1001).
    let (opcode, _) = server_frame(&mut ws).await;
    assert_eq!(opcode, 0x9, "ping");
    loop {
        let (opcode, payload) = tokio::time::timeout(Duration::from_secs(5), server_frame(&mut ws))
            .await
            .expect("closed in time");
        if opcode == 0x8 {
            assert_eq!(&payload[..2], &1001u16.to_be_bytes());
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_bodies_are_not_warnings() {
    let (server, _dir) = start(&[]);
    for _ in 0..20 {
        let mut stream = connect_from([127, 0, 0, 1], server.addr).await;
        stream
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"jsonrpc\"")
            .await
            .expect("write");
        drop(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(health_from([127, 0, 0, 1], server.addr, Duration::from_secs(1)).await);
    let log = server.log();
    assert!(!log.contains(" WARN "), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_every_time() {
    // A client still sending when the server has seen enough used to lose
    // the 413 to a connection reset (1 run in 5). Up to twice the limit the
    // server drains the body first, announced (Content-Length) or chunked.
    let (server, _dir) = start(&[]);
    let body = format!("[{}]", "1,".repeat(600_000) + "1");
    let client = reqwest::Client::new();
    for round in 0..20 {
        let response = client
            .post(&server.url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("announced, round {round}: {e:?}"));
        assert_eq!(response.status().as_u16(), 413, "round {round}");

        let mut stream = connect_from([127, 0, 0, 1], server.addr).await;
        stream
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .expect("head");
        for chunk in body.as_bytes().chunks(64 * 1024) {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            stream.write_all(&framed).await.expect("chunk");
        }
        stream.write_all(b"0\r\n\r\n").await.expect("last chunk");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 413"),
            "chunked, round {round}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(100)])
        );
    }
}
