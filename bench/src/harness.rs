//! One benchmark run: starts rpcguard and the baseline, creates the account,
//! checks every scenario's requests, runs the scenarios in order and hands
//! back what was measured.
//!
//! [`Bench`] is what a scenario gets: the two servers, the account, the load
//! shape, and the means to run, time and record a load run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::account::{Account, USER};
use crate::args::Args;
use crate::load::{self, Conn, LoadConfig, Prepared, Target};
use crate::quiet::Quiet;
use crate::record::{Measured, Run, Runs};
use crate::scenarios::memory::ServerMemory;
use crate::scenarios::Scenario;
use crate::server::{self, CpuMeter, CpuUse, Machine, ServerProcess};

/// The policy of [`Bench::rpcguard_policy`]: `get_caller` re-scoped by the
/// policy (to what it declares: any signed-in caller), an any-of
/// requirement, and per-caller and per-address budgets high enough never to
/// refuse, so that every call pays for the policy lookup and a budget draw.
pub const POLICY: &str = r#"
[methods.get_caller]
scopes = []

[methods.require_scopes]
any_of = [["admin"], ["scope1", "scope2"]]

[limits]
per_caller = "1000000000/min"
per_ip = "1000000000/min"
"#;

/// The running benchmark, as the scenarios see it.
pub struct Bench {
    /// The command line.
    pub args: Args,
    /// The machine it runs on.
    pub machine: Machine,
    /// `rpcguard serve`, on a fresh SQLite data dir, at the default log
    /// level (`info`: one line per call, to a file), as users run it.
    pub rpcguard: ServerProcess,
    /// The bare jsonrpsee baseline.
    pub baseline: ServerProcess,
    /// A second `rpcguard serve` at log level `warn` (no line per call),
    /// for the cost of the log line.
    pub rpcguard_warn: ServerProcess,
    /// [`crate::account::USER`]'s token on [`Bench::rpcguard_warn`].
    pub warn_token: String,
    /// A third `rpcguard serve` with an operator policy and rate limits
    /// ([`POLICY`]), for their cost (at the default log level, as (a)).
    pub rpcguard_policy: ServerProcess,
    /// [`crate::account::USER`]'s token on [`Bench::rpcguard_policy`].
    pub policy_token: String,
    /// The benchmark account on rpcguard.
    pub account: Account,
    /// Connections, warm-up and measured time of the load scenarios.
    pub load: LoadConfig,
    /// Concurrent `sign_in` callers of the flood.
    pub flood_connections: usize,
    /// Every load run so far.
    pub runs: Runs,
    /// Each server's RSS readings so far.
    pub memory: ServerMemory,
    quiet: Quiet,
}

/// A load run as measured, before it is recorded.
pub struct Measurement {
    /// The server that answered.
    pub server: &'static str,
    /// Its figures.
    pub run: Run,
    /// The server's highest RSS in the measured window, KiB, when sampled.
    pub rss_peak: Option<u64>,
}

impl Bench {
    /// Waits (within the limits of the command line) until other processes
    /// leave the machine quiet.
    pub async fn wait_for_quiet(&mut self) {
        self.quiet.wait().await;
    }

    /// Runs `target` with `config`; measures where the CPU went during the
    /// measured part and, when `sample_rss`, samples the server's RSS every
    /// 100 ms of it (keeping the highest sample).
    pub async fn measure(
        &self,
        target: &Target,
        config: LoadConfig,
        sample_rss: bool,
    ) -> Measurement {
        let (server, other) = self.server_and_other(target);
        measure_with(server, other, target, config, sample_rss).await
    }

    /// [`Bench::measure`] for a server of the scenario's own (the other
    /// process whose CPU is told apart is the baseline), without RSS.
    pub async fn measure_on(
        &self,
        server: &ServerProcess,
        target: &Target,
        config: LoadConfig,
    ) -> Measurement {
        measure_with(server, &self.baseline, target, config, false).await
    }

    /// Records a run of scenario `id` and prints it with its CPU reading.
    pub fn record(&mut self, round: usize, id: &'static str, measured: Measurement) {
        println!(
            "round {} {id:<18} {}  {}",
            round + 1,
            measured.run.load.line(),
            cpu_line(&measured.run.cpu)
        );
        if let Some(peak) = measured.rss_peak {
            self.memory.record_peak(measured.server, peak);
        }
        self.runs.push(id, measured.run);
    }

    /// Records a run that shared its measured window, and so its CPU
    /// reading, with the run recorded just before it; prints it without CPU.
    pub fn record_beside(&mut self, round: usize, id: &'static str, run: Run) {
        println!("round {} {id:<18} {}", round + 1, run.load.line());
        self.runs.push(id, run);
    }

    /// Waits for a quiet machine, then measures and records one run.
    pub async fn measure_and_record(
        &mut self,
        round: usize,
        id: &'static str,
        target: &Target,
        config: LoadConfig,
        sample_rss: bool,
    ) {
        self.wait_for_quiet().await;
        let measured = self.measure(target, config, sample_rss).await;
        self.record(round, id, measured);
    }

    /// The server `target` is sent to, and the other one.
    fn server_and_other(&self, target: &Target) -> (&ServerProcess, &ServerProcess) {
        if target.addr == self.rpcguard.addr {
            (&self.rpcguard, &self.baseline)
        } else if target.addr == self.rpcguard_warn.addr {
            (&self.rpcguard_warn, &self.baseline)
        } else if target.addr == self.rpcguard_policy.addr {
            (&self.rpcguard_policy, &self.baseline)
        } else {
            (&self.baseline, &self.rpcguard)
        }
    }
}

/// Runs `target` against `server` (`other`: the other server whose CPU is
/// counted apart) and measures what [`Bench::measure`] says.
async fn measure_with(
    server: &ServerProcess,
    other: &ServerProcess,
    target: &Target,
    config: LoadConfig,
    sample_rss: bool,
) -> Measurement {
    let (load, (rss_peak, cpu)) = tokio::join!(
        load::run(target, config),
        sample_during_window(config, server.pid(), other.pid(), sample_rss)
    );
    Measurement {
        server: server.name,
        run: Run::new(load, cpu, config),
        rss_peak,
    }
}

/// Waits out the warm-up, then measures the CPU over the measured window
/// and, when `sample_rss`, the server's highest RSS in it.
async fn sample_during_window(
    config: LoadConfig,
    server_pid: u32,
    other_pid: u32,
    sample_rss: bool,
) -> (Option<u64>, CpuUse) {
    tokio::time::sleep(config.warmup).await;
    let meter = CpuMeter::start(server_pid, &[other_pid]);
    let end = Instant::now() + config.duration;
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
}

/// One console line of where the CPU went.
pub fn cpu_line(c: &CpuUse) -> String {
    format!(
        "cpu: server {:.2}, load generator {:.2}, other processes {:.2} cores",
        c.server, c.client, c.other
    )
}

/// Runs the whole benchmark: every scenario of `scenarios`, in order, which
/// keep what they measure beyond load runs; returns the rest.
pub async fn run(
    args: Args,
    command: String,
    nofile: u64,
    scenarios: &mut [Box<dyn Scenario>],
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut bench = Bench::start(args, nofile).await?;
    check_every_request(&bench, scenarios).await?;
    println!(
        "setup ok: user {USER}, token of {} bytes; every scenario answers as expected",
        bench.account.token.len()
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    bench.memory.read_after_setup(&bench.rpcguard)?;
    bench.memory.read_after_setup(&bench.baseline)?;

    for scenario in scenarios.iter_mut() {
        scenario.run(&mut bench).await?;
    }

    bench.memory.read_after_load(&bench.rpcguard)?;
    bench.memory.read_after_load(&bench.baseline)?;
    Ok(bench.finish(command, nofile, started))
}

impl Bench {
    /// Starts both servers, reads their fresh RSS and creates the account.
    async fn start(args: Args, nofile: u64) -> anyhow::Result<Bench> {
        let machine = Machine::read();
        let (rpcguard_bin, baseline_bin) = binaries(&args)?;
        warn_if_too_few_files(&args, nofile);
        let flood_connections = args.flood_connections.unwrap_or(machine.cores);
        println!(
            "machine: {} cores, {}, {} RAM; open-file limit {nofile}",
            machine.cores, machine.model, machine.mem_total
        );
        let (rpcguard, baseline) = start_servers(&args, &rpcguard_bin, &baseline_bin)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut memory = ServerMemory::default();
        memory.read_fresh(&rpcguard)?;
        memory.read_fresh(&baseline)?;

        let account = Account::set_up(&rpcguard, &baseline).await?;
        let rpcguard_warn = server::start_rpcguard(
            &rpcguard_bin,
            args.bcrypt_cost,
            &args.rpcguard_args,
            server::Logging::Quiet,
        )?;
        let warn_token = crate::account::token_on(&rpcguard_warn).await?;
        let policy_file = tempfile::Builder::new()
            .prefix("rpcguard-bench-policy-")
            .suffix(".toml")
            .tempfile()?;
        std::fs::write(policy_file.path(), POLICY)?;
        let mut policy_args = args.rpcguard_args.clone();
        policy_args.extend([
            "--policy".to_owned(),
            policy_file.path().display().to_string(),
        ]);
        let rpcguard_policy = server::start_rpcguard(
            &rpcguard_bin,
            args.bcrypt_cost,
            &policy_args,
            server::Logging::DefaultToFile,
        )?;
        // The server read the file at start.
        drop(policy_file);
        let policy_token = crate::account::token_on(&rpcguard_policy).await?;
        let quiet = Quiet::new(
            args.quiet_below,
            args.quiet_wait,
            args.quiet_budget,
            (rpcguard.pid(), baseline.pid()),
        );
        Ok(Bench {
            load: load_config(&args),
            args,
            machine,
            rpcguard,
            baseline,
            rpcguard_warn,
            warn_token,
            rpcguard_policy,
            policy_token,
            account,
            flood_connections,
            runs: Runs::default(),
            memory,
            quiet,
        })
    }

    /// Stops the servers and keeps what the report needs.
    fn finish(self, command: String, nofile: u64, started: Instant) -> Measured {
        self.rpcguard.stop();
        self.baseline.stop();
        self.rpcguard_warn.stop();
        self.rpcguard_policy.stop();
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Measured {
            args: self.args,
            command,
            machine: self.machine,
            commit: server::git_commit(),
            date,
            nofile,
            flood_connections: self.flood_connections,
            runs: self.runs,
            memory: self.memory,
            total_time: started.elapsed(),
            quiet_waited: self.quiet.waited(),
        }
    }
}

/// The rpcguard and baseline binaries: from the command line, or next to
/// this one; an error when one is missing.
fn binaries(args: &Args) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (default_rpcguard, default_baseline) = server::default_binaries()?;
    let rpcguard = args.rpcguard_bin.clone().unwrap_or(default_rpcguard);
    let baseline = args.baseline_bin.clone().unwrap_or(default_baseline);
    for bin in [&rpcguard, &baseline] {
        if !bin.exists() {
            bail!(
                "{} is missing: build with `cargo build --release --workspace --bins` (bench/run.sh does)",
                bin.display()
            );
        }
    }
    Ok((rpcguard, baseline))
}

/// Starts `rpcguard serve` (with the command line's cost and extra
/// arguments) and the baseline.
fn start_servers(
    args: &Args,
    rpcguard_bin: &Path,
    baseline_bin: &Path,
) -> anyhow::Result<(ServerProcess, ServerProcess)> {
    let rpcguard = server::start_rpcguard(
        rpcguard_bin,
        args.bcrypt_cost,
        &args.rpcguard_args,
        server::Logging::DefaultToFile,
    )?;
    let baseline = server::start_baseline(baseline_bin)?;
    println!(
        "rpcguard pid {} on {}; baseline pid {} on {}",
        rpcguard.pid(),
        rpcguard.addr,
        baseline.pid(),
        baseline.addr
    );
    Ok((rpcguard, baseline))
}

/// Connections, warm-up and measured time of the load scenarios.
fn load_config(args: &Args) -> LoadConfig {
    LoadConfig {
        connections: args.connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    }
}

/// (g) needs a descriptor per session on each side, plus some (the soak
/// runs without it).
fn warn_if_too_few_files(args: &Args, nofile: u64) {
    if args.soak == 0 && args.sessions > 0 && (nofile as usize) < args.sessions + 512 {
        eprintln!(
            "warning: open-file limit {nofile} < sessions + 512; run with `ulimit -n 65536` (as root) for --sessions {}",
            args.sessions
        );
    }
}

/// Sends each scenario's requests once and checks every answer, before any
/// load runs.
async fn check_every_request(bench: &Bench, scenarios: &[Box<dyn Scenario>]) -> anyhow::Result<()> {
    for (name, target) in scenarios.iter().flat_map(|s| s.requests(bench)) {
        let prepared = Prepared::new(&target);
        let mut conn = Conn::open(&prepared)
            .await
            .with_context(|| format!("connecting for {name}"))?;
        if !conn.call(&prepared).await? {
            bail!(
                "{name}: unexpected answer {}",
                String::from_utf8_lossy(conn.body())
            );
        }
    }
    Ok(())
}
