//! The operator's endpoints and the client address, in process: `GET /`,
//! `GET /ready` (the reference server's check, an application check that
//! fails or hangs, the drain), and the client address a trusted proxy
//! names (and the per-client cap behind it).

use std::net::SocketAddr;
use std::time::Duration;

use rpcguard::server::ReadinessCheck;
use rpcguard::{Api, CallContext, Method, RpcError, ServerConfig};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::helpers::*;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn root_points_to_the_docs_or_to_the_api() {
    let app = TestApp::spawn().await;
    let root = no_redirects().get(&app.url).send().await.expect("GET /");
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/docs");

    let off = TestApp::spawn_with(StoreKind::Sqlite, |c| c.server.docs_page = false)
        .await
        .expect("sqlite");
    let root = no_redirects().get(&off.url).send().await.expect("GET /");
    assert_eq!(root.status(), 200);
    let body: Value = root.json().await.expect("json");
    assert_eq!(
        body,
        json!({"docs": null, "openrpc": "/openrpc.json", "rpc": "POST /"})
    );
}

#[tokio::test]
async fn the_reference_server_is_ready_once_its_store_answers() {
    let app = TestApp::spawn().await;
    let ready = app
        .http
        .get(format!("{}ready", app.url))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.headers()["cache-control"], "no-store");
    assert_eq!(
        ready.json::<Value>().await.expect("json"),
        json!({"ready": true})
    );
    let post = app
        .http
        .post(format!("{}ready", app.url))
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status(), 405);
}

/// Params of `wait`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Wait {
    /// Milliseconds.
    ms: u64,
}

/// A server with `whereami` (the client and peer addresses it sees) and
/// `wait`, under `config`.
async fn framework_server(config: ServerConfig) -> rpcguard::RunningServer {
    let mut api: Api<()> = Api::new();
    api.secured_by(rpcguard::MethodSecurity::public());
    api.method(
        Method::new("whereami"),
        |_: rpcguard::NoParams, ctx: CallContext<()>| async move {
            Ok::<_, RpcError>(json!({
                "client": ctx.remote_addr().map(|a| a.ip().to_string()),
                "peer": ctx.peer_addr().map(|a| a.ip().to_string()),
                "draining": ctx.draining().is_draining(),
            }))
        },
    )
    .expect("whereami")
    .method(
        Method::new("wait"),
        |p: Wait, _: CallContext<()>| async move {
            tokio::time::sleep(Duration::from_millis(p.ms)).await;
            Ok::<_, RpcError>(p.ms)
        },
    )
    .expect("wait");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    rpcguard::serve(listener, api)
        .config(config)
        .spawn()
        .expect("spawn")
}

async fn ready(addr: SocketAddr) -> (u16, Value) {
    let response = reqwest::get(format!("http://{addr}/ready"))
        .await
        .expect("ready");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn ready_names_what_is_wrong() {
    let failing = framework_server(ServerConfig {
        readiness: Some(ReadinessCheck::new(|| async {
            Err(vec!["store".to_owned(), "keys".to_owned()])
        })),
        ..ServerConfig::default()
    })
    .await;
    assert_eq!(
        ready(failing.local_addr()).await,
        (503, json!({"ready": false, "why": ["store", "keys"]}))
    );
    // Liveness is not readiness.
    let health = reqwest::get(format!("http://{}/health", failing.local_addr()))
        .await
        .expect("health");
    assert_eq!(health.status(), 200);

    let hanging = framework_server(ServerConfig {
        readiness: Some(ReadinessCheck::new(std::future::pending)),
        ready_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let started = std::time::Instant::now();
    assert_eq!(
        ready(hanging.local_addr()).await,
        (503, json!({"ready": false, "why": ["timeout"]}))
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // Draining: 503 at once, calls still served and told so.
    let server = framework_server(ServerConfig {
        drain_delay: Duration::from_millis(800),
        ..ServerConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let draining = server.draining();
    assert!(!draining.is_draining());
    assert_eq!(ready(addr).await, (200, json!({"ready": true})));
    let stopping = tokio::spawn(server.stop());
    tokio::time::timeout(Duration::from_secs(1), draining.wait())
        .await
        .expect("draining");
    assert_eq!(
        ready(addr).await,
        (503, json!({"ready": false, "why": ["draining"]}))
    );
    let answer = post(addr, "whereami", json!({}), &[]).await;
    assert_eq!(answer["result"]["draining"], true, "{answer}");
    stopping.await.expect("stopped");
}

async fn post(addr: SocketAddr, method: &str, params: Value, headers: &[(&str, &str)]) -> Value {
    post_from(addr, "127.0.0.1", method, params, headers).await
}

async fn post_from(
    addr: SocketAddr,
    source: &str,
    method: &str,
    params: Value,
    headers: &[(&str, &str)],
) -> Value {
    let client = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let mut request = client
        .post(format!("http://{addr}/"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send");
    if response.status() != 200 {
        return json!({"http_status": response.status().as_u16()});
    }
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trusted_proxy_names_the_client() {
    let server = framework_server(ServerConfig {
        trusted_proxies: "127.0.0.1".parse().expect("list"),
        max_connections_per_ip: 1,
        ..ServerConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let xff = [("x-forwarded-for", "6.6.6.6, 203.0.113.5")];
    let seen = post(addr, "whereami", json!({}), &xff).await;
    assert_eq!(seen["result"]["client"], "203.0.113.5", "{seen}");
    assert_eq!(seen["result"]["peer"], "127.0.0.1", "{seen}");
    // From a peer that is not trusted the header is ignored.
    let seen = post_from(addr, "127.0.0.2", "whereami", json!({}), &xff).await;
    assert_eq!(seen["result"]["client"], "127.0.0.2", "{seen}");
    let seen = post_from(addr, "127.0.0.2", "whereami", json!({}), &[]).await;
    assert_eq!(seen["result"]["client"], "127.0.0.2", "{seen}");

    // Behind the proxy the per-address cap (1 here) applies per client:
    // a second request of the same client in flight is refused, another
    // client's is not, and the proxy's own connections are not capped.
    static ONE: [(&str, &str); 1] = [("x-forwarded-for", "203.0.113.5")];
    let one = &ONE;
    let slow = tokio::spawn(post(addr, "wait", json!({"ms": 600}), one));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = post(addr, "whereami", json!({}), one).await;
    assert_eq!(again, json!({"http_status": 503}));
    let other = [("x-forwarded-for", "203.0.113.6")];
    let seen = post(addr, "whereami", json!({}), &other).await;
    assert_eq!(seen["result"]["client"], "203.0.113.6", "{seen}");
    assert_eq!(slow.await.expect("join")["result"], 600);
    let after = post(addr, "whereami", json!({}), one).await;
    assert_eq!(after["result"]["client"], "203.0.113.5", "{after}");
    server.stop().await;
}
