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
//! ```
//!
//! Scenarios (issue 6): (a) `get_caller` with a valid token over HTTP
//! keep-alive vs the baseline's `ping`; (b) the same over WebSocket
//! sessions; (c) `require_scopes` denied (-32099); (d) `get_caller` with an
//! invalid token (-32001); (e) `rpc.discover`; (f) a `sign_in` flood at full
//! bcrypt load, alone and while (a) runs; (g) N concurrent authenticated idle
//! WebSocket sessions and the server's RSS per session; (h) server RSS idle
//! and under (a).

mod load;
mod plot;
mod report;
mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;

use load::{Conn, Expect, LoadConfig, LoadResult, Prepared, Target, Transport};
use server::{CpuUse, ServerProcess};

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
    /// Concurrent sign_in callers of the flood (default: 4 × cores).
    #[arg(long)]
    pub flood_connections: Option<usize>,
    /// Idle authenticated WebSocket sessions of scenario (g); 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
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

const USER: &str = "benchuser";
const PASSWORD: &str = "bench password 1";

/// Scenario ids, in report order.
pub const BASE_HTTP: &str = "base-http";
pub const A_HTTP: &str = "a-http";
pub const BASE_WS: &str = "base-ws";
pub const B_WS: &str = "b-ws";
pub const C_DENIED: &str = "c-denied";
pub const D_INVALID: &str = "d-invalid";
pub const E_DISCOVER: &str = "e-discover";
pub const F_A_ALONE: &str = "f-a-alone";
pub const F_A_FLOOD: &str = "f-a-during-flood";
pub const F_FLOOD_ALONE: &str = "f-signin-alone";
pub const F_FLOOD_DURING: &str = "f-signin-during-a";

/// Everything measured, for the report.
pub struct Measured {
    pub args: Args,
    pub command: String,
    pub machine: server::Machine,
    pub commit: String,
    pub date: String,
    pub nofile: u64,
    pub flood_connections: usize,
    /// Runs of each scenario, in order.
    pub runs: BTreeMap<&'static str, Vec<LoadResult>>,
    /// Where the CPU went during each run (same order as `runs`).
    pub cpu: BTreeMap<&'static str, Vec<CpuUse>>,
    /// Seconds of one bcrypt verify at the configured cost (fastest of 5).
    pub bcrypt_verify_s: f64,
    pub bcrypt_verify_samples: Vec<f64>,
    /// RSS, KiB.
    pub rss: BTreeMap<&'static str, Rss>,
    pub sessions: Vec<SessionsResult>,
    pub total_time: Duration,
    /// Seconds spent waiting for other processes to go quiet.
    pub quiet_waited: f64,
}

/// RSS figures of one server, KiB.
#[derive(Default, Clone, Debug)]
pub struct Rss {
    pub fresh: u64,
    pub idle_after_setup: u64,
    /// Highest sample during the measured part of each (a)/ping HTTP run.
    pub under_load_max: Vec<u64>,
    pub idle_after_load: u64,
}

/// Scenario (g) on one server.
#[derive(Clone, Debug, Default)]
pub struct SessionsResult {
    pub server: &'static str,
    pub wanted: usize,
    pub opened: usize,
    pub open_failures: usize,
    pub open_seconds: f64,
    pub calls_ok: usize,
    pub rss_before: u64,
    pub rss_open: u64,
    pub rss_after_calls: u64,
    /// RSS 3 s after the client closed every session.
    pub rss_after_close: u64,
    /// Open file descriptors of the server: before, with the sessions open,
    /// 3 s after they were closed.
    pub fds: (usize, usize, usize),
    pub first_error: Option<String>,
}

impl SessionsResult {
    /// KiB per session: growth after one call on each, over open sessions.
    pub fn kib_per_session(&self) -> f64 {
        if self.opened == 0 {
            return f64::NAN;
        }
        self.rss_after_calls
            .max(self.rss_open)
            .saturating_sub(self.rss_before) as f64
            / self.opened as f64
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let command = std::env::var("BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let nofile = server::raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let measured = runtime.block_on(run(args, command, nofile))?;
    let svg = measured.args.out.with_extension("svg");
    let markdown = report::markdown(&measured, &svg);
    if let Some(dir) = measured.args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&measured.args.out, &markdown)
        .with_context(|| format!("cannot write {}", measured.args.out.display()))?;
    plot::svg(&measured, &svg)?;
    println!("\n{markdown}");
    println!(
        "wrote {} and {}",
        measured.args.out.display(),
        svg.display()
    );
    Ok(())
}

async fn run(args: Args, command: String, nofile: u64) -> anyhow::Result<Measured> {
    let t0 = Instant::now();
    let machine = server::Machine::read();
    let (default_rpcguard, default_baseline) = server::default_binaries()?;
    let rpcguard_bin = args.rpcguard_bin.clone().unwrap_or(default_rpcguard);
    let baseline_bin = args.baseline_bin.clone().unwrap_or(default_baseline);
    for bin in [&rpcguard_bin, &baseline_bin] {
        if !bin.exists() {
            bail!(
                "{} is missing: build with `cargo build --release --bins --examples` (bench/run.sh does)",
                bin.display()
            );
        }
    }
    if args.sessions > 0 && (nofile as usize) < args.sessions + 512 {
        eprintln!(
            "warning: open-file limit {nofile} < sessions + 512; run with `ulimit -n 65536` (as root) for --sessions {}",
            args.sessions
        );
    }
    let flood_connections = args.flood_connections.unwrap_or(4 * machine.cores);
    println!(
        "machine: {} cores, {}, {} RAM; open-file limit {nofile}",
        machine.cores, machine.model, machine.mem_total
    );

    let rpcguard = server::start_rpcguard(&rpcguard_bin, args.bcrypt_cost, &args.rpcguard_args)?;
    let baseline = server::start_baseline(&baseline_bin)?;
    println!(
        "rpcguard pid {} on {}; baseline pid {} on {}",
        rpcguard.pid(),
        rpcguard.addr,
        baseline.pid(),
        baseline.addr
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rss: BTreeMap<&'static str, Rss> = BTreeMap::new();
    rss.entry("rpcguard").or_default().fresh = rpcguard.rss_kib()?;
    rss.entry("baseline").or_default().fresh = baseline.rss_kib()?;

    // The account, its token, and a check of every answer before loading.
    let token = setup(&rpcguard, &baseline).await?;
    let invalid = invalid_token(&token);
    let targets = Targets::new(&rpcguard, &baseline, &token, &invalid);
    for (name, target) in targets.all() {
        let prepared = Prepared::new(target);
        let mut conn = Conn::open(&prepared)
            .await
            .with_context(|| format!("connecting for {name}"))?;
        let ok = conn.call(&prepared).await?;
        if !ok {
            bail!(
                "{name}: unexpected answer {}",
                String::from_utf8_lossy(conn.body())
            );
        }
    }
    println!(
        "setup ok: user {USER}, token of {} bytes; every scenario answers as expected",
        token.len()
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    rss.get_mut("rpcguard").expect("entry").idle_after_setup = rpcguard.rss_kib()?;
    rss.get_mut("baseline").expect("entry").idle_after_setup = baseline.rss_kib()?;

    let cfg = LoadConfig {
        connections: args.connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let mut quiet = Quiet {
        below: args.quiet_below,
        per_run: args.quiet_wait,
        budget: args.quiet_budget,
        waited: 0.0,
        pids: (rpcguard.pid(), baseline.pid()),
    };
    let mut runs: BTreeMap<&'static str, Vec<LoadResult>> = BTreeMap::new();
    let mut cpu: BTreeMap<&'static str, Vec<CpuUse>> = BTreeMap::new();

    // (a)–(e), alternating with the baseline; the order flips each round.
    for round in 0..args.rounds {
        let mut order = vec![
            (BASE_HTTP, &targets.base_http),
            (A_HTTP, &targets.a_http),
            (BASE_WS, &targets.base_ws),
            (B_WS, &targets.b_ws),
            (C_DENIED, &targets.c_denied),
            (D_INVALID, &targets.d_invalid),
            (E_DISCOVER, &targets.e_discover),
        ];
        if round % 2 == 1 {
            order.swap(0, 1);
            order.swap(2, 3);
            order[4..].reverse();
        }
        for (id, target) in order {
            let (pid, other) = if target.addr == rpcguard.addr {
                (rpcguard.pid(), baseline.pid())
            } else {
                (baseline.pid(), rpcguard.pid())
            };
            let sample_rss = id == A_HTTP || id == BASE_HTTP;
            quiet.wait().await;
            let (result, peak, use_) = run_sampled(target, cfg, pid, &[other], sample_rss).await;
            println!(
                "round {} {id:<18} {}  {}",
                round + 1,
                result.line(),
                cpu_line(&use_)
            );
            cpu.entry(id).or_default().push(use_);
            if let Some(peak) = peak {
                let server = if id == A_HTTP { "rpcguard" } else { "baseline" };
                rss.get_mut(server)
                    .expect("entry")
                    .under_load_max
                    .push(peak);
            }
            runs.entry(id).or_default().push(result);
        }
    }

    // (f): sign_in flood alone, (a) alone, (a) during the flood.
    let flood_cfg = LoadConfig {
        connections: flood_connections,
        ..cfg
    };
    // One bcrypt verify at the configured cost, in this process, on a quiet
    // machine: the fastest of 5 (other processes can only slow it down).
    quiet.wait().await;
    let cost = args.bcrypt_cost;
    let samples = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
        let hash = bcrypt::hash(PASSWORD, cost)?;
        let mut samples = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            if !bcrypt::verify(PASSWORD, &hash)? {
                bail!("bcrypt verify failed");
            }
            samples.push(t.elapsed().as_secs_f64());
        }
        Ok(samples)
    })
    .await??;
    let bcrypt_verify_s = samples.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "bcrypt verify at cost {cost}: {:.1} ms (fastest of {samples:?})",
        bcrypt_verify_s * 1000.0
    );
    let (rg, bl) = (rpcguard.pid(), [baseline.pid()]);
    for round in 0..args.rounds {
        quiet.wait().await;
        let (flood, _, use_) = run_sampled(&targets.f_signin, flood_cfg, rg, &bl, false).await;
        println!(
            "round {} {F_FLOOD_ALONE:<18} {}  {}",
            round + 1,
            flood.line(),
            cpu_line(&use_)
        );
        runs.entry(F_FLOOD_ALONE).or_default().push(flood);
        cpu.entry(F_FLOOD_ALONE).or_default().push(use_);

        quiet.wait().await;
        let (alone, _, use_) = run_sampled(&targets.a_http, cfg, rg, &bl, false).await;
        println!(
            "round {} {F_A_ALONE:<18} {}  {}",
            round + 1,
            alone.line(),
            cpu_line(&use_)
        );
        runs.entry(F_A_ALONE).or_default().push(alone);
        cpu.entry(F_A_ALONE).or_default().push(use_);

        quiet.wait().await;
        let ((during, _, use_), flood) = tokio::join!(
            run_sampled(&targets.a_http, cfg, rg, &bl, false),
            load::run(&targets.f_signin, flood_cfg)
        );
        println!(
            "round {} {F_A_FLOOD:<18} {}  {}",
            round + 1,
            during.line(),
            cpu_line(&use_)
        );
        println!("round {} {F_FLOOD_DURING:<18} {}", round + 1, flood.line());
        runs.entry(F_A_FLOOD).or_default().push(during);
        runs.entry(F_FLOOD_DURING).or_default().push(flood);
        cpu.entry(F_A_FLOOD).or_default().push(use_);
        cpu.entry(F_FLOOD_DURING).or_default().push(use_);
    }

    // (g): N authenticated idle WebSocket sessions, then the same on the
    // baseline (unauthenticated, for comparison).
    let mut sessions = Vec::new();
    if args.sessions > 0 {
        // Let the bcrypt threads of the flood go idle first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (server, target) in [(&rpcguard, &targets.b_ws), (&baseline, &targets.base_ws)] {
            let result = hold_sessions(server, target, args.sessions).await;
            println!(
                "{:<9} sessions: {}/{} open in {:.1} s ({} failed), {} answered a call; RSS {} -> {} (open) -> {} KiB (after a call each): {:.1} KiB/session{}",
                result.server,
                result.opened,
                result.wanted,
                result.open_seconds,
                result.open_failures,
                result.calls_ok,
                result.rss_before,
                result.rss_open,
                result.rss_after_calls,
                result.kib_per_session(),
                result.first_error.as_deref().map(|e| format!("; first error: {e}")).unwrap_or_default()
            );
            println!(
                "{:<9} after closing them: RSS {} KiB, open fds {} (before {}, with the sessions {})",
                result.server, result.rss_after_close, result.fds.2, result.fds.0, result.fds.1
            );
            sessions.push(result);
        }
    }

    rss.get_mut("rpcguard").expect("entry").idle_after_load = rpcguard.rss_kib()?;
    rss.get_mut("baseline").expect("entry").idle_after_load = baseline.rss_kib()?;
    rpcguard.stop();
    baseline.stop();

    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(Measured {
        args,
        command,
        machine,
        commit: server::git_commit(),
        date,
        nofile,
        flood_connections,
        runs,
        cpu,
        bcrypt_verify_s,
        bcrypt_verify_samples: samples,
        rss,
        sessions,
        total_time: t0.elapsed(),
        quiet_waited: quiet.waited,
    })
}

/// Every request the scenarios send.
struct Targets {
    base_http: Target,
    a_http: Target,
    base_ws: Target,
    b_ws: Target,
    c_denied: Target,
    d_invalid: Target,
    e_discover: Target,
    f_signin: Target,
}

impl Targets {
    fn new(
        rpcguard: &ServerProcess,
        baseline: &ServerProcess,
        token: &str,
        invalid: &str,
    ) -> Targets {
        let call = |method: &str| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#);
        let target =
            |server: &ServerProcess, transport, method: &str, bearer: Option<&str>, expect| {
                Target {
                    addr: server.addr,
                    transport,
                    body: call(method),
                    bearer: bearer.map(str::to_owned),
                    expect,
                }
            };
        let user = Expect::Result(format!(r#""username":"{USER}""#));
        // The baseline gets the same Authorization header (and ignores it),
        // so both servers parse the same bytes.
        Targets {
            base_http: target(baseline, Transport::Http, "ping", Some(token), user.clone()),
            a_http: target(
                rpcguard,
                Transport::Http,
                "get_caller",
                Some(token),
                user.clone(),
            ),
            base_ws: target(baseline, Transport::Ws, "ping", Some(token), user.clone()),
            b_ws: target(rpcguard, Transport::Ws, "get_caller", Some(token), user),
            c_denied: target(
                rpcguard,
                Transport::Http,
                "require_scopes",
                Some(token),
                Expect::Error(-32099),
            ),
            d_invalid: target(
                rpcguard,
                Transport::Http,
                "get_caller",
                Some(invalid),
                Expect::Error(-32001),
            ),
            e_discover: target(
                rpcguard,
                Transport::Http,
                "rpc.discover",
                None,
                Expect::Result(r#""openrpc":"1.3.2""#.to_owned()),
            ),
            f_signin: Target {
                addr: rpcguard.addr,
                transport: Transport::Http,
                body: format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"sign_in","params":["{USER}","{PASSWORD}"]}}"#
                ),
                bearer: None,
                expect: Expect::Result(r#""access_token":"#.to_owned()),
            },
        }
    }

    fn all(&self) -> Vec<(&'static str, &Target)> {
        vec![
            (BASE_HTTP, &self.base_http),
            (A_HTTP, &self.a_http),
            (BASE_WS, &self.base_ws),
            (B_WS, &self.b_ws),
            (C_DENIED, &self.c_denied),
            (D_INVALID, &self.d_invalid),
            (E_DISCOVER, &self.e_discover),
            (F_FLOOD_ALONE, &self.f_signin),
        ]
    }
}

/// Creates the account and returns a token for it.
async fn setup(rpcguard: &ServerProcess, baseline: &ServerProcess) -> anyhow::Result<String> {
    let sign_up = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"sign_up","params":{{"username":"{USER}","password":"{PASSWORD}"}}}}"#
    );
    let (status, body) = load::call_once(rpcguard.addr, &sign_up, None).await?;
    if status != 200 || !body.contains("\"result\"") {
        bail!("sign_up failed: HTTP {status} {body}");
    }
    let sign_in = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"sign_in","params":["{USER}","{PASSWORD}"]}}"#
    );
    let (status, body) = load::call_once(rpcguard.addr, &sign_in, None).await?;
    let answer: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("sign_in answered HTTP {status} {body}"))?;
    let token = answer["result"]["access_token"]
        .as_str()
        .with_context(|| format!("sign_in answered {body}"))?
        .to_owned();
    let (status, body) = load::call_once(
        baseline.addr,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        None,
    )
    .await?;
    if status != 200 || !body.contains("\"result\"") {
        bail!("baseline ping failed: HTTP {status} {body}");
    }
    Ok(token)
}

/// The token with the first character of its signature changed: well
/// formed, so the server runs the whole HMAC check before refusing it.
fn invalid_token(token: &str) -> String {
    let sig = token.rfind('.').map(|i| i + 1).unwrap_or(0);
    let mut bytes = token.as_bytes().to_vec();
    if let Some(b) = bytes.get_mut(sig) {
        *b = if *b == b'A' { b'B' } else { b'A' };
    }
    String::from_utf8(bytes).expect("ascii")
}

/// A load run; measures where the CPU went during the measured part and,
/// when asked, samples the server's RSS every 100 ms of it (returning the
/// highest sample).
async fn run_sampled(
    target: &Target,
    cfg: LoadConfig,
    server_pid: u32,
    also_ours: &[u32],
    sample_rss: bool,
) -> (LoadResult, Option<u64>, CpuUse) {
    let sampler = async {
        tokio::time::sleep(cfg.warmup).await;
        let meter = server::CpuMeter::start(server_pid, also_ours);
        let end = Instant::now() + cfg.duration;
        let mut peak = 0;
        while Instant::now() < end {
            if sample_rss {
                if let Ok(kib) = server::rss_kib(server_pid) {
                    peak = peak.max(kib);
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
        (sample_rss.then_some(peak), meter.stop())
    };
    let (result, (peak, cpu)) = tokio::join!(load::run(target, cfg), sampler);
    (result, peak, cpu)
}

/// Opens `n` WebSocket sessions (authorized at the upgrade when the target
/// has a token), holds them idle, then makes one call on each.
async fn hold_sessions(server: &ServerProcess, target: &Target, n: usize) -> SessionsResult {
    let prepared = Arc::new(Prepared::new(target));
    let mut result = SessionsResult {
        server: server.name,
        wanted: n,
        rss_before: server.rss_kib().unwrap_or(0),
        ..SessionsResult::default()
    };
    result.fds.0 = server::open_fds(server.pid());
    let t = Instant::now();
    let opened: Vec<Result<Conn, std::io::Error>> = futures::stream::iter(0..n)
        .map(|_| {
            let prepared = prepared.clone();
            async move { Conn::open(&prepared).await }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    result.open_seconds = t.elapsed().as_secs_f64();
    let mut conns = Vec::with_capacity(n);
    for c in opened {
        match c {
            Ok(c) => conns.push(c),
            Err(e) => {
                result.open_failures += 1;
                result.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    result.opened = conns.len();
    // Idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    result.rss_open = server.rss_kib().unwrap_or(0);
    result.fds.1 = server::open_fds(server.pid());
    // Every session still open and authorized: one call on each.
    let answers: Vec<Result<bool, std::io::Error>> = futures::stream::iter(conns.iter_mut())
        .map(|c| {
            let prepared = prepared.clone();
            async move { c.call(&prepared).await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    for a in answers {
        match a {
            Ok(true) => result.calls_ok += 1,
            Ok(false) => {
                result
                    .first_error
                    .get_or_insert_with(|| "unexpected answer".to_owned());
            }
            Err(e) => {
                result.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    result.rss_after_calls = server.rss_kib().unwrap_or(0);
    drop(conns);
    tokio::time::sleep(Duration::from_secs(3)).await;
    result.rss_after_close = server.rss_kib().unwrap_or(0);
    result.fds.2 = server::open_fds(server.pid());
    result
}

/// Waits (within limits) for a quiet machine before a run.
struct Quiet {
    below: f64,
    per_run: f64,
    budget: f64,
    waited: f64,
    pids: (u32, u32),
}

impl Quiet {
    async fn wait(&mut self) {
        let start = Instant::now();
        loop {
            let spent = start.elapsed().as_secs_f64();
            if spent >= self.per_run || self.waited + spent >= self.budget {
                break;
            }
            let meter = server::CpuMeter::start(self.pids.0, &[self.pids.1]);
            tokio::time::sleep(Duration::from_millis(500)).await;
            if meter.stop().other < self.below {
                break;
            }
        }
        self.waited += start.elapsed().as_secs_f64();
    }
}

fn cpu_line(c: &CpuUse) -> String {
    format!(
        "cpu: server {:.2}, load generator {:.2}, other processes {:.2} cores",
        c.server, c.client, c.other
    )
}

/// Median of floats (mean of the middle two for an even count).
pub fn median_f64(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
