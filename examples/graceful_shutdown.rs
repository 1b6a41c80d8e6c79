//! Readiness and a graceful shutdown: on SIGTERM (or ctrl-c) `GET /ready`
//! turns 503 at once while every call is still served for the drain delay,
//! then the listener closes, calls in flight get the grace period to
//! finish, and calls still running then are answered with a JSON-RPC error
//! (`-32603`, `data {"reason":"shutting_down"}`); WebSocket sessions close
//! with 1001.
//!
//! Two public methods show the two kinds of handler: `sleep` ignores the
//! drain (and is cut off at the deadline if it runs too long), `long_poll`
//! watches [`CallContext::draining`] and answers early.
//!
//! ```sh
//! DRAIN_DELAY_MS=3000 SHUTDOWN_GRACE_MS=5000 cargo run --example graceful_shutdown
//! curl -s localhost:8082/ready
//! curl -s localhost:8082 -H 'content-type: application/json' \
//!      -d '{"jsonrpc":"2.0","id":1,"method":"long_poll","params":{"ms":60000}}' &
//! kill -TERM %1   # (the server's pid): the long poll answers {"draining":true}
//! ```

use std::time::Duration;

use rpcguard::server::ReadinessCheck;
use rpcguard::{Api, CallContext, Method, RpcError, ServerConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Params of `sleep` and `long_poll`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Wait {
    /// Milliseconds to wait (at most 10 minutes).
    #[schemars(range(max = 600_000))]
    ms: u64,
}

/// What `long_poll` answers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
struct Polled {
    /// True when it ended early because the server is draining.
    draining: bool,
}

const MAX_WAIT_MS: u64 = 600_000;

async fn sleep(params: Wait, _: CallContext<()>) -> Result<u64, RpcError> {
    let ms = params.ms.min(MAX_WAIT_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

async fn long_poll(params: Wait, ctx: CallContext<()>) -> Result<Polled, RpcError> {
    let draining = ctx.draining();
    let wait = Duration::from_millis(params.ms.min(MAX_WAIT_MS));
    tokio::select! {
        () = tokio::time::sleep(wait) => Ok(Polled { draining: false }),
        () = draining.wait() => Ok(Polled { draining: true }),
    }
}

/// A duration in milliseconds from the environment variable `name`.
fn millis(name: &str, default: u64) -> Duration {
    let ms = std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_millis(ms)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .init();
    let mut api: Api<()> = Api::new();
    api.method(
        Method::new("sleep")
            .summary("Sleeps, whatever happens")
            .public(),
        sleep,
    )?
    .method(
        Method::new("long_poll")
            .summary("Waits, and answers early when the server drains")
            .public(),
        long_poll,
    )?;
    let config = ServerConfig {
        drain_delay: millis("DRAIN_DELAY_MS", 3_000),
        shutdown_grace: millis("SHUTDOWN_GRACE_MS", 5_000),
        // An application would ask its store here.
        readiness: Some(ReadinessCheck::new(|| async { Ok(()) })),
        ..ServerConfig::default()
    };
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8082".to_owned());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}/", listener.local_addr()?);
    // No secured method here, so no security function.
    rpcguard::serve(listener, api)
        .config(config)
        .with_graceful_shutdown(rpcguard::server::shutdown_signal())
        .await?;
    Ok(())
}
