//! The benchmark's load generator on its own, against any running server:
//! fixed connections, warm-up, fixed duration; prints requests/s, latency
//! p50/p90/p99/max and the answers that were not the expected one.
//!
//! ```sh
//! cargo run --release -p rpcguard-bench --bin loadgen -- --addr 127.0.0.1:8080 \
//!     --method get_caller --token "$TOKEN" --expect-result '"username"'
//! cargo run --release -p rpcguard-bench --bin loadgen -- --addr 127.0.0.1:8080 --ws \
//!     --method require_scopes --token "$TOKEN" --expect-error -32099
//! ```
//!
//! `bench/run.sh` runs every scenario of issue 6 with this same code.

#[path = "../load.rs"]
mod load;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "closed-loop JSON-RPC load over HTTP keep-alive or WebSocket"
)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Method to call (no params) ...
    #[arg(long, default_value = "get_caller")]
    method: String,
    /// ... or the whole JSON-RPC request.
    #[arg(long)]
    body: Option<String>,
    /// Bearer token (HTTP: each request; WS: the upgrade).
    #[arg(long)]
    token: Option<String>,
    /// An extra request header, `Name: value` (repeatable; HTTP: each
    /// request; WS: the upgrade).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Use WebSocket sessions instead of HTTP keep-alive.
    #[arg(long)]
    ws: bool,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Warm-up, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured time, seconds.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Expected: a result containing this text (default: any result).
    #[arg(long, conflicts_with = "expect_error")]
    expect_result: Option<String>,
    /// Expected: an error with this code.
    #[arg(long, allow_hyphen_values = true)]
    expect_error: Option<i64>,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = load::Target {
        addr: args.addr,
        transport: if args.ws {
            load::Transport::Ws
        } else {
            load::Transport::Http
        },
        body: args
            .body
            .unwrap_or_else(|| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{}"}}"#, args.method)),
        bearer: args.token,
        headers: args.headers.iter().map(|h| format!("{h}\r\n")).collect(),
        expect: match (args.expect_error, args.expect_result) {
            (Some(code), _) => load::Expect::Error(code),
            (None, text) => load::Expect::Result(text.unwrap_or_default()),
        },
    };
    let config = load::LoadConfig {
        connections: args.connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let result = runtime.block_on(load::run(&target, config));
    println!("{}", result.line());
    if result.unexpected > 0 || result.io_errors > 0 || result.requests == 0 {
        std::process::exit(1);
    }
    Ok(())
}
