//! The benchmark baseline: a bare jsonrpsee server, no middleware, no auth,
//! one trivial method.
//!
//! `ping` answers an object of the same shape and about the same size as
//! `get_caller`'s answer, so that the difference measured by the benchmark
//! (`bench/run.sh`, issue 6) is the cost of rpcguard's security layer:
//! header extraction, JWT verification, user lookup and scope check.
//!
//! HTTP and WebSocket on one port, jsonrpsee's defaults except the
//! connection limit, raised to rpcguard's 20,000 (jsonrpsee's default of 100
//! would refuse the benchmark's 10,000 idle sessions). No logging.
//!
//! Run: `cargo run --release --example baseline -- 127.0.0.1:0`; it prints
//! `baseline listening on http://ADDR/` on stderr once it accepts.

use std::net::SocketAddr;

use jsonrpsee::server::{RpcModule, Server, ServerConfig};
use jsonrpsee::types::ErrorObjectOwned;
use serde::Serialize;

/// What `ping` answers: the shape of rpcguard's `User`.
#[derive(Clone, Serialize)]
struct Pong {
    username: String,
    scopes: Scopes,
    created_at: String,
}

#[derive(Clone, Serialize)]
struct Scopes {
    #[serde(rename = "Bearer")]
    bearer: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()?;
    let max_connections: u32 = match args.next() {
        Some(n) => n.parse()?,
        None => 20_000,
    };
    // Same runtime as `rpcguard serve`: tokio's multi-threaded default.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let config = ServerConfig::builder()
            .max_connections(max_connections)
            .build();
        let server = Server::builder().set_config(config).build(addr).await?;
        let bound = server.local_addr()?;
        let mut module = RpcModule::new(());
        module.register_method("ping", |_, _, _| {
            Ok::<_, ErrorObjectOwned>(Pong {
                username: "benchuser".to_owned(),
                scopes: Scopes { bearer: Vec::new() },
                created_at: "2026-11-27T15:00:00Z".to_owned(),
            })
        })?;
        let handle = server.start(module);
        eprintln!("baseline listening on http://{bound}/");
        tokio::select! {
            _ = handle.clone().stopped() => {}
            _ = tokio::signal::ctrl_c() => { let _ = handle.stop(); }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
