//! The harness's command line: run length, rounds, load shape, the soak,
//! noise control, and the binaries under test.

use std::path::PathBuf;

use clap::Parser;

/// Options of `bench` (see `bench/run.sh --help`).
#[derive(Debug, Parser, Clone)]
#[command(name = "bench", about = "rpcguard benchmark harness (issue 6)")]
pub struct Args {
    /// Where to write the Markdown report; the plot goes next to it (.svg).
    #[arg(long, default_value = "bench/results.md")]
    pub out: PathBuf,
    /// Warm-up before each measured run, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Measured time of each run, seconds.
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// Rounds of the alternating scenarios; figures are the medians.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Connections (HTTP) or sessions (WS) of the load scenarios.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Concurrent sign_in callers of the flood (default: one per core, as
    /// many as bcrypt workers).
    #[arg(long)]
    pub flood_connections: Option<usize>,
    /// Idle authenticated WebSocket sessions of scenario (g); 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Runs only the soak of issue 10, for this many seconds (0 skips it):
    /// get_caller over HTTP and WebSocket, sign_in, and CLI grants/revokes
    /// at once; writes --soak-out instead of --out.
    #[arg(long, default_value_t = 0)]
    pub soak: u64,
    /// Runs only these scenarios of a full run (repeatable): alternating,
    /// flood, sessions, memory, propagation, algorithms, operated, writes.
    /// Default: all.
    #[arg(long)]
    pub only: Vec<String>,
    /// A PostgreSQL server (its admin URL) for scenario (i), the delay of
    /// a committed write to reach another instance: a fresh database is
    /// created there. Without it (i) is skipped.
    #[arg(long, env = "RPCGUARD_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Grant/revoke pairs of scenario (i).
    #[arg(long, default_value_t = 200)]
    pub propagation_trials: usize,
    /// Where a --soak run writes its report.
    #[arg(long, default_value = "bench/soak.md")]
    pub soak_out: PathBuf,
    /// bcrypt cost of the server (and of the in-process reference verify).
    #[arg(long, default_value_t = 12)]
    pub bcrypt_cost: u32,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Before each run, wait until other processes use less than this many
    /// cores (measured over 0.5 s), so that builds or tests running beside
    /// the benchmark disturb it less ...
    #[arg(long, default_value_t = 0.25)]
    pub quiet_below: f64,
    /// ... for at most this many seconds per run ...
    #[arg(long, default_value_t = 15.0)]
    pub quiet_wait: f64,
    /// ... and at most this many seconds in the whole run (0 disables waiting).
    #[arg(long, default_value_t = 150.0)]
    pub quiet_budget: f64,
    /// Extra argument for `rpcguard serve` (repeatable), e.g.
    /// `--rpcguard-arg=--user-cache-ms=1000`.
    #[arg(long = "rpcguard-arg", allow_hyphen_values = true)]
    pub rpcguard_args: Vec<String>,
    /// The rpcguard binary (default: target/release/rpcguard next to this one).
    #[arg(long)]
    pub rpcguard_bin: Option<PathBuf>,
    /// The baseline binary (default: target/release/baseline).
    #[arg(long)]
    pub baseline_bin: Option<PathBuf>,
}
