//! The benchmark harness of issue 6: runs every scenario against rpcguard
//! and a bare jsonrpsee baseline (both separate processes on loopback),
//! alternating them so that machine noise hits both, and writes
//! `bench/results.md` and `bench/results.svg`.
//!
//! One command (builds the server, the baseline and this harness in release
//! mode, then runs it):
//!
//! ```sh
//! bench/run.sh                     # = cargo build --release --workspace --bins
//!                                  #   && target/release/bench --out bench/results.md
//! bench/run.sh --duration 4        # shorter runs; see --help for every knob
//! bench/run.sh --soak 600          # only the soak of issue 10 -> bench/soak.md
//! ```
//!
//! Scenarios (issue 6), one file each under `scenarios/`: (a) `get_caller`
//! with a valid token over HTTP keep-alive vs the baseline's `ping`; (b) the
//! same over WebSocket sessions; (c) `require_scopes` denied (-32099); (d)
//! `get_caller` with an invalid token (-32001); (e) `rpc.discover` — all five
//! in `alternating.rs`; (f) a `sign_in` flood at full bcrypt load, alone and
//! while (a) runs (`flood.rs`); (g) N concurrent authenticated idle
//! WebSocket sessions and the server's RSS per session (`sessions.rs`); (h)
//! server RSS idle and under (a) (`memory.rs`); (j) `get_caller` per
//! `--jwt-alg` against the baseline, and sign/verify cost per algorithm
//! (`algorithms.rs`). `--only NAME` runs some of them. `--soak SECONDS` runs only
//! the soak of issue 10 instead (`soak.rs`): mixed load, CLI grants and
//! revokes, and the server's RSS over minutes, reported in `bench/soak.md`.

mod account;
mod args;
mod harness;
mod load;
mod plot;
mod quiet;
mod record;
mod report;
mod requests;
mod scenarios;
mod server;
mod stats;

use std::path::Path;

use anyhow::Context;
use clap::Parser;

use args::Args;
use record::Measured;
use scenarios::Scenario;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let command = std::env::var("BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let nofile = server::raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let mut scenarios = scenarios::for_args(&args)?;
    let measured = runtime.block_on(harness::run(args, command, nofile, &mut scenarios))?;
    if measured.args.soak > 0 {
        write_soak_report(&measured, &scenarios)
    } else {
        write_outputs(&measured, &scenarios)
    }
}

/// Writes the report and, next to it, the plot; prints the report.
fn write_outputs(measured: &Measured, scenarios: &[Box<dyn Scenario>]) -> anyhow::Result<()> {
    let out: &Path = &measured.args.out;
    let svg = out.with_extension("svg");
    let markdown = report::markdown(measured, scenarios, &svg);
    write_report(out, &markdown)?;
    plot::svg(measured, &report::rows(scenarios), &svg)?;
    println!("\n{markdown}");
    println!("wrote {} and {}", out.display(), svg.display());
    Ok(())
}

/// Writes the soak's report (`--soak-out`, not `--out`); prints it.
fn write_soak_report(measured: &Measured, scenarios: &[Box<dyn Scenario>]) -> anyhow::Result<()> {
    let out: &Path = &measured.args.soak_out;
    let markdown = report::soak_markdown(measured, scenarios);
    write_report(out, &markdown)?;
    println!("\n{markdown}");
    println!("wrote {}", out.display());
    Ok(())
}

/// Writes `markdown` to `out`, creating its directory.
fn write_report(out: &Path, markdown: &str) -> anyhow::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, markdown).with_context(|| format!("cannot write {}", out.display()))
}
