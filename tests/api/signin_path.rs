//! The sign-in path under hostile clients (issue 16, rows 4–6), each against
//! a real `rpcguard serve` process:
//! - a `sign_up` flood from one address neither refuses nor delays the
//!   correct `sign_in` of a user at another address (own sign-up budget,
//!   separate bcrypt queues with verification first);
//! - `sign_in` with a fresh username per call from one address keeps the
//!   server's memory flat (the address's budget is checked first, so no
//!   per-account key is stored for refused attempts);
//! - after a change of bcrypt cost, an unknown user and an existing one
//!   still take the same time, the existing hash is re-hashed at the next
//!   successful `sign_in`, and `user add` writes at the stored cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::ws_client::WsClientBuilder;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::attacks::{assert_similar_timing, Client, Target};
use crate::helpers::*;

/// The victim's address; every flood in this file comes from 127.0.0.1.
const VICTIM_IP: [u8; 4] = [127, 0, 0, 2];

/// What a [`sign_up_flood`] got back.
#[derive(Default)]
struct Flood {
    /// Every error object answered.
    errors: Vec<Value>,
    /// Accounts created.
    created: usize,
}

/// Sends waves of `in_flight` `sign_up` calls at once on one WebSocket
/// session from 127.0.0.1, the next wave 100 ms after the last call of the
/// previous one was answered, recording the answers in `record`; runs until
/// dropped. (Waves, not a tight loop: on loopback the test client shares
/// the machine's cores with the server, and a loop of instantly refused
/// calls would measure the scheduler, not the sign-in path.)
async fn sign_up_flood(target: &Target, in_flight: usize, record: &Mutex<Flood>) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let ws = WsClientBuilder::default()
        .max_concurrent_requests(in_flight * 2)
        .request_timeout(Duration::from_secs(600))
        .build(format!("ws://{}/", target.process.addr))
        .await
        .expect("ws");
    let ws = &ws;
    let call = |n: usize| async move {
        let mut params = jsonrpsee::core::params::ArrayParams::new();
        params.insert(format!("flood{n}")).expect("param");
        params.insert(PASSWORD).expect("param");
        ws.request::<Value, _>("sign_up", params).await
    };
    for wave in 0.. {
        let mut calls: FuturesUnordered<_> = (wave * in_flight..(wave + 1) * in_flight)
            .map(call)
            .collect();
        while let Some(outcome) = calls.next().await {
            let mut record = record.lock().expect("lock");
            match outcome {
                Ok(_) => record.created += 1,
                Err(jsonrpsee::core::ClientError::Call(err)) => record
                    .errors
                    .push(serde_json::to_value(&err).expect("error object")),
                Err(other) => panic!("the flood's session failed: {other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs the victim in from [`VICTIM_IP`] `times` times while a `sign_up`
/// flood of `in_flight` calls runs from 127.0.0.1; asserts that every one
/// succeeds within `max(2 s, 10 × the slower of two such sign_ins measured
/// just before the flood)`. Returns what the flood got and the slowest sign_in.
async fn victim_signs_in_during_flood(
    target: &Target,
    in_flight: usize,
    times: usize,
) -> (Flood, Duration) {
    let victim = Client::from_ip(target, VICTIM_IP);
    let (answer, _) = victim.rpc("sign_up", json!(["victim", PASSWORD])).await;
    assert!(answer["result"].is_object(), "{answer}");
    // Within the victim's own budget of 5 sign_ins a minute: 2 now, `times` later.
    assert!(times <= 3);
    let mut quiet = Vec::new();
    for _ in 0..2 {
        let (answer, took) = victim.rpc("sign_in", json!(["victim", PASSWORD])).await;
        assert!(answer["result"]["access_token"].is_string(), "{answer}");
        quiet.push(took);
    }
    quiet.sort();
    let bound = (quiet[1] * 10).max(Duration::from_secs(2));

    let record = Mutex::new(Flood::default());
    let victim_side = async {
        // Let the flood fill the server first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..times {
            let call = victim.rpc("sign_in", json!(["victim", PASSWORD]));
            let Ok((answer, took)) = tokio::time::timeout(bound * 3, call).await else {
                panic!(
                    "the victim's sign_in got no answer within {:?} during the flood",
                    bound * 3
                );
            };
            assert!(
                answer["result"]["access_token"].is_string(),
                "the victim's sign_in during the flood: {answer} after {took:?}"
            );
            assert!(
                took < bound,
                "the victim's sign_in took {took:?} during the flood (bound {bound:?}, quiet {:?})",
                quiet[1]
            );
            slowest = slowest.max(took);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slowest
    };
    let slowest = tokio::select! {
        slowest = victim_side => slowest,
        () = sign_up_flood(target, in_flight, &record) => panic!("the flood ended"),
    };
    let flood = record.into_inner().expect("lock");
    eprintln!(
        "victim sign_in: quiet {:?}, slowest during the flood {slowest:?} (bound {bound:?}); flood: {} created, {} refused",
        quiet[1],
        flood.created,
        flood.errors.len()
    );
    (flood, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_flood_is_throttled_and_does_not_block_sign_in_from_another_address() {
    // The default sign-up budget (10 a minute per address), bcrypt cost 10.
    let target = Target::start(&["--bcrypt-cost", "10", "--signup-per-ip", "10"]);
    let (Flood { errors, created }, _) = victim_signs_in_during_flood(&target, 300, 3).await;
    assert!(
        created <= 10,
        "one address created {created} accounts in a few seconds"
    );
    assert!(!errors.is_empty());
    for error in &errors {
        assert_eq!(error["code"], -32005, "{error}");
        assert_eq!(error["message"], "Too many requests", "{error}");
        assert!(
            error["data"]["retry_after_s"]
                .as_u64()
                .is_some_and(|s| s >= 1),
            "{error}"
        );
    }
    // The flood's budget is its own: another address still signs up.
    let (answer, _) = Client::from_ip(&target, VICTIM_IP)
        .rpc("sign_up", json!(["newcomer", PASSWORD]))
        .await;
    assert!(answer["result"].is_object(), "{answer}");
    target.assert_no_leaks(&[PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_goes_before_a_full_sign_up_queue() {
    // No sign-up budget: the flood reaches bcrypt and keeps the sign-up
    // queue full; sign_in has its own queue and goes first.
    let target = Target::start(&["--bcrypt-cost", "10", "--signup-per-ip", "0"]);
    let (Flood { errors, created }, _) = victim_signs_in_during_flood(&target, 300, 3).await;
    assert!(created > 0, "the flood reached bcrypt");
    assert!(
        errors.iter().all(|e| e["code"] == -32005),
        "a full sign-up queue answers -32005: {errors:?}"
    );
    target.health().await;
}

/// VmRSS of a process, KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_usernames_from_one_address_keep_memory_flat() {
    // Default budgets. Batches of 100 sign_ins, each with a fresh 60-character
    // username, from 4 connections at once for 4 seconds.
    // One stored key per refused call (the old order) costs ~200 bytes:
    // 10,000 calls would pass this bound.
    const BOUND_KIB: u64 = 2 * 1024;
    let target = Target::start(&[]);
    let pid = target.process.child.id();
    let client = reqwest::Client::new();
    let url = target.process.url.clone();
    // Warm up (allocator arenas, connection tasks) before the baseline.
    let batch = |tag: usize, n: usize| -> String {
        Value::Array(
            (0..100)
                .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "sign_in", "params": [format!("{:a<60}", format!("f{tag}x{n}x{i}x")), "wrong password"]}))
                .collect(),
        )
        .to_string()
    };
    for n in 0..20 {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(batch(9, n))
            .send()
            .await
            .expect("post");
    }
    let before = vm_rss_kib(pid);
    let calls = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(4);
    let senders = (0..4).map(|tag| {
        let (client, url, calls) = (client.clone(), url.clone(), calls.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(batch(tag, n))
                    .send()
                    .await
                    .expect("post");
                let text = response.text().await.expect("body");
                assert!(text.contains("-32005") || text.contains("-32002"), "{text}");
                calls.fetch_add(100, Ordering::Relaxed);
                n += 1;
            }
        })
    });
    let senders: Vec<_> = senders.collect();
    let mut peak = before;
    while Instant::now() < deadline {
        peak = peak.max(vm_rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    peak = peak.max(vm_rss_kib(pid));
    let calls = calls.load(Ordering::Relaxed);
    eprintln!(
        "{calls} sign_ins with fresh usernames in 4 s: RSS {before} KiB -> peak {peak} KiB (+{} KiB)",
        peak - before
    );
    assert!(calls >= 10_000, "the flood ran: {calls} calls");
    assert!(
        peak - before < BOUND_KIB,
        "RSS grew by {} KiB (bound {BOUND_KIB} KiB) over {calls} calls",
        peak - before
    );
    // The real user at another address is unaffected.
    target.sign_up("victim", PASSWORD).await;
    let (answer, _) = Client::from_ip(&target, VICTIM_IP)
        .rpc("sign_in", json!(["victim", PASSWORD]))
        .await;
    assert!(answer["result"]["access_token"].is_string(), "{answer}");
}

/// The bcrypt cost of `username`'s stored hash, read from the data dir's
/// SQLite file (beside the running server).
async fn stored_cost(data_dir: &std::path::Path, username: &str) -> u32 {
    let db = data_dir.join(rpcguard_accounts::config::DATABASE_FILE_NAME);
    let store = rpcguard_accounts::store::open(&db.display().to_string(), 1)
        .await
        .expect("store");
    let user = store
        .find_user(username)
        .await
        .expect("read")
        .expect("user");
    user.password_hash
        .split('$')
        .nth(2)
        .and_then(|c| c.parse().ok())
        .expect("bcrypt hash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_cost_is_no_timing_oracle_and_old_hashes_are_rehashed() {
    // alice signs up on a server at cost 9 ...
    let mut flags = vec!["--bcrypt-cost", "9"];
    flags.extend(NO_SIGNIN_THROTTLE);
    let first = Target::start(&flags);
    first.sign_up("alice", PASSWORD).await;
    let dir = first.into_dir();
    assert_eq!(stored_cost(dir.path(), "alice").await, 9);

    // ... which restarts at cost 7: an unknown user must take as long as
    // alice with a wrong password (alice's hash is still at 9).
    let mut flags = vec!["--bcrypt-cost", "7"];
    flags.extend(NO_SIGNIN_THROTTLE);
    let target = Target::start_in(dir, &flags);
    assert_similar_timing(&target, "alice", "nobody", 20, 0.15).await;

    // alice's next successful sign_in re-hashes her password at cost 7.
    assert!(!target.token("alice", PASSWORD).await.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cost = stored_cost(target._dir.path(), "alice").await;
        if cost == 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's hash is still at cost {cost}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new hash works.
    assert!(!target.token("alice", PASSWORD).await.is_empty());
    let answer = target
        .rpc(
            "sign_in",
            json!(["alice", "wrong password"]),
            HeaderMap::new(),
        )
        .await;
    assert_eq!(answer["error"]["code"], -32002, "{answer}");
    target.assert_no_leaks(&[PASSWORD]);
}

/// Runs `rpcguard user add NAME --data-dir DIR EXTRA` with the password on
/// stdin and no `RPCGUARD_BCRYPT_COST` in the environment.
fn user_add(data_dir: &std::path::Path, name: &str, extra: &[&str]) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rpcguard"));
    command
        .args(["user", "add", name, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env_remove("RPCGUARD_BCRYPT_COST")
        .env("RUST_LOG", "warn");
    let out = output_with_stdin(command, &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_writes_at_the_cost_the_server_uses() {
    let target = Target::start(&["--bcrypt-cost", "6"]);
    let dir = target._dir.path();
    // No hash stored yet: the cost the server published at its start (not
    // the CLI's default 12, which would make this account slower to refuse
    // a wrong password than an unknown name).
    user_add(dir, "alice", &[]);
    assert_eq!(stored_cost(dir, "alice").await, 6);
    target.sign_up("bob", PASSWORD).await;
    // No --bcrypt-cost: the cost the stored hashes (written by the server) have.
    user_add(dir, "carol", &[]);
    assert_eq!(stored_cost(dir, "carol").await, 6);
    // An explicit cost wins.
    user_add(dir, "dave", &["--bcrypt-cost", "5"]);
    assert_eq!(stored_cost(dir, "dave").await, 5);
    // carol signs in on the server like any user.
    assert!(!target.token("carol", PASSWORD).await.is_empty());
}
