//! The soak of issue 10: a mixed load held for minutes against one
//! `rpcguard serve`, checking that no answer goes wrong over time, that
//! every grant and revoke made by the CLI is seen at once, and that the
//! server's memory stays flat. `--soak SECONDS` runs it alone (e.g.
//! `bench/run.sh --soak 600`) and writes `--soak-out` (bench/soak.md).
//!
//! For the whole run, at once:
//! 1. `get_caller` with the account's token over [`CONNECTIONS`] HTTP
//!    keep-alive connections (closed loops);
//! 2. the same over [`CONNECTIONS`] WebSocket sessions;
//! 3. `sign_in` of [`SIGN_IN_USER`] once a second (a bcrypt verify);
//! 4. once a second, `rpcguard user grant|revoke FLIP_USER scope1`
//!    alternately on the server's data dir (another process writing the
//!    SQLite file), and as soon as the command returns, `require_scopes`
//!    with [`FLIP_USER`]'s token over HTTP and over a WebSocket session
//!    opened before the run: that first call after the command must see the
//!    new state (`true` after a grant, -32099 after a revoke);
//! 5. the server's RSS is read once a second, and the median of the first
//!    minute is compared with the median of the last (the first and last
//!    fifth of the run for runs shorter than three minutes).
//!
//! Every answer is checked.

use std::fmt::Write;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::LocalBoxFuture;
use tokio::time::{Interval, MissedTickBehavior};

use super::Scenario;
use crate::account::{self, USER};
use crate::harness::{cpu_line, Bench};
use crate::load::{self, Conn, LoadConfig, LoadResult, Prepared, Target, Transport};
use crate::record::Measured;
use crate::report::{mib, Verdict};
use crate::requests;
use crate::server::{self, CpuMeter, CpuUse, ServerProcess};
use crate::stats::median_f64;

/// Connections of each `get_caller` stream: HTTP keep-alive connections,
/// and WebSocket sessions.
pub const CONNECTIONS: usize = 8;
/// The user who signs in once a second.
pub const SIGN_IN_USER: &str = "soaksignin";
/// The user whose `scope1` the CLI grants and revokes.
pub const FLIP_USER: &str = "soakflip";
/// The scope flipped: the one `require_scopes` demands.
const SCOPE: &str = "scope1";
/// Time between two sign_ins, two flips, two RSS readings.
const PERIOD: Duration = Duration::from_secs(1);
/// Longest wait for one answer or one CLI command; longer is a failure.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Runs at least this long compare the first and the last minute of RSS;
/// shorter ones the first and the last [`SHORT_WINDOW_SHARE`] of the run.
const MINUTE_WINDOWS_FROM: f64 = 180.0;
/// The share of a short run each RSS window covers.
const SHORT_WINDOW_SHARE: f64 = 0.2;
/// How far the last window's median RSS may be from the first's.
const RSS_TOLERANCE: f64 = 0.10;
/// Problems (unexpected answers, failures) kept and shown per caller.
const PROBLEMS_KEPT: usize = 5;

/// The soak, and what it measured.
#[derive(Default)]
pub struct Soak {
    result: Option<SoakResult>,
}

/// What one soak measured.
struct SoakResult {
    /// The length asked for.
    length: Duration,
    /// (1) `get_caller` over HTTP keep-alive.
    http: LoadResult,
    /// (2) `get_caller` over WebSocket.
    ws: LoadResult,
    /// (3) `sign_in` of [`SIGN_IN_USER`].
    sign_in: Tally,
    /// (4) the flips ...
    flips: Flips,
    /// ... and the calls that had to see them, over HTTP ...
    flip_http: Tally,
    /// ... and over WebSocket.
    flip_ws: Tally,
    /// (5) the server's RSS.
    rss: RssSamples,
    /// Where the CPU went during the run.
    cpu: CpuUse,
}

impl Scenario for Soak {
    fn requests(&self, bench: &Bench) -> Vec<(&'static str, Target)> {
        let token = bench.account.token.as_str();
        vec![
            (
                "soak get_caller HTTP",
                requests::get_caller(&bench.rpcguard, Transport::Http, token),
            ),
            (
                "soak get_caller WS",
                requests::get_caller(&bench.rpcguard, Transport::Ws, token),
            ),
        ]
    }

    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if bench.args.soak == 0 {
                return Ok(());
            }
            let length = Duration::from_secs(bench.args.soak);
            // Before the flipper's connections open: the server closes a
            // keep-alive connection left idle for 10 s.
            bench.wait_for_quiet().await;
            let flipper = Flipper::set_up(&bench.rpcguard).await?;
            println!(
                "soak: {} s of get_caller over {CONNECTIONS} HTTP connections and {CONNECTIONS} WebSocket sessions, \
                 sign_in of {SIGN_IN_USER} and a CLI grant/revoke of {FLIP_USER} every second",
                length.as_secs()
            );
            let result = soak(bench, flipper, length).await;
            print_result(&result);
            self.result = Some(result);
            Ok(())
        })
    }

    fn verdicts(&self, _m: &Measured) -> Vec<Verdict> {
        let Some(r) = &self.result else {
            return Vec::new();
        };
        vec![answers_verdict(r), flips_verdict(r), rss_verdict(r)]
    }

    fn write_sections(&self, m: &Measured, out: &mut String) {
        if let Some(r) = &self.result {
            write_streams(r, out);
            write_flips(r, out);
            write_rss(r, m, out);
            write_problems(r, out);
        }
    }

    fn method(&self, _m: &Measured) -> Vec<String> {
        vec![
            format!(
                "One `rpcguard serve` (fresh temporary SQLite data dir, sign-in throttling disabled, `RUST_LOG=warn`), \
                 started by the harness as for the other scenarios; the baseline is started too but gets no load. \
                 Before the run the harness signs up `{SIGN_IN_USER}` and `{FLIP_USER}` and checks that \
                 `{FLIP_USER}` is refused `require_scopes` on both transports."
            ),
            format!(
                "At once for the whole run, all from the harness's load generator: `get_caller` with `{USER}`'s token \
                 over {CONNECTIONS} HTTP keep-alive connections and over {CONNECTIONS} WebSocket sessions (closed loops, \
                 one call in flight each); `sign_in` of `{SIGN_IN_USER}` once a second over one keep-alive connection; \
                 once a second `rpcguard user grant|revoke {FLIP_USER} {SCOPE} --data-dir DIR` alternately (a separate \
                 process writing the server's SQLite file), and as soon as it exits successfully, `require_scopes` with \
                 `{FLIP_USER}`'s token over one HTTP keep-alive connection and one WebSocket session (both opened before \
                 the run, sent at once): that first call after the command must answer `true` after a grant and -32099 \
                 after a revoke."
            ),
            "Every answer is checked (HTTP 200 and the expected `result` or error `code`); a failed connection is \
             counted as an I/O error and reopened; an answer or CLI command taking more than 30 s is a failure. \
             Late ticks of the once-a-second streams are delayed, not bunched."
                .to_owned(),
            format!(
                "RSS is `VmRSS` of the server from `/proc/PID/status`, read once a second; the target compares the \
                 median of the first minute with the median of the last (for runs shorter than {MINUTE_WINDOWS_FROM:.0} s: \
                 the first and the last {:.0} % of the run) and must stay within {:.0} % either way. CPU shares count the \
                 CLI processes under other processes.",
                SHORT_WINDOW_SHARE * 100.0,
                RSS_TOLERANCE * 100.0
            ),
        ]
    }
}

/// Runs the five streams for `length` and gathers what they measured.
async fn soak(bench: &Bench, mut flipper: Flipper, length: Duration) -> SoakResult {
    let token = bench.account.token.as_str();
    let http = requests::get_caller(&bench.rpcguard, Transport::Http, token);
    let ws = requests::get_caller(&bench.rpcguard, Transport::Ws, token);
    let sign_in = Prepared::new(&requests::sign_in_as(&bench.rpcguard, SIGN_IN_USER));
    let config = LoadConfig {
        connections: CONNECTIONS,
        warmup: Duration::ZERO,
        duration: length,
    };
    let start = Instant::now();
    let end = start + length;
    let meter = CpuMeter::start(bench.rpcguard.pid(), &[bench.baseline.pid()]);
    let (http, ws, sign_in, (), rss) = tokio::join!(
        load::run(&http, config),
        load::run(&ws, config),
        sign_ins(&sign_in, end),
        flipper.run(end),
        sample_rss(bench.rpcguard.pid(), start, end),
    );
    SoakResult {
        length,
        http,
        ws,
        sign_in,
        flips: flipper.flips,
        flip_http: flipper.http.tally,
        flip_ws: flipper.ws.tally,
        rss,
        cpu: meter.stop(),
    }
}

/// A once-a-second ticker whose late ticks are delayed, not bunched.
fn every_period() -> Interval {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// (3): `sign_in` once a second until `end`, over one connection.
async fn sign_ins(prepared: &Prepared, end: Instant) -> Tally {
    let mut caller = Caller::default();
    let mut ticks = every_period();
    loop {
        ticks.tick().await;
        if Instant::now() >= end {
            return caller.tally;
        }
        caller.call(prepared, "sign_in").await;
    }
}

/// (5): the server's RSS once a second until `end`; prints it every tenth
/// of the run (at least 10 s, at most a minute apart).
async fn sample_rss(pid: u32, start: Instant, end: Instant) -> RssSamples {
    let length = end.duration_since(start).as_secs_f64();
    let print_every = (length / 10.0).clamp(10.0, 60.0);
    let mut next_print = print_every;
    let mut samples = RssSamples::default();
    let mut ticks = every_period();
    loop {
        ticks.tick().await;
        let at = start.elapsed().as_secs_f64();
        if at >= length {
            return samples;
        }
        match server::rss_kib(pid) {
            Ok(kib) => samples.readings.push((at, kib)),
            Err(_) => samples.failed_reads += 1,
        }
        if at >= next_print {
            next_print += print_every;
            if let Some((_, kib)) = samples.readings.last() {
                println!(
                    "soak: {at:.0} s of {length:.0}: server RSS {:.1} MiB",
                    mib(*kib)
                );
            }
        }
    }
}

/// Single calls on one connection, reopened after a failure.
#[derive(Default)]
struct Caller {
    conn: Option<Conn>,
    tally: Tally,
}

/// The answers of a [`Caller`].
#[derive(Default)]
struct Tally {
    /// Latency of each answer, expected or not, microseconds.
    latencies_us: Vec<u32>,
    /// Answers that were not the expected one.
    unexpected: u64,
    /// Failed connections, and calls unanswered after [`TIMEOUT`].
    io_errors: u64,
    /// The first [`PROBLEMS_KEPT`] unexpected answers and failures.
    problems: Vec<String>,
}

impl Caller {
    /// Sends `prepared` (opening the connection first if needed) and checks
    /// the answer; `true` when it is the expected one. `what` names the call
    /// in the problems.
    async fn call(&mut self, prepared: &Prepared, what: &str) -> bool {
        let sent = Instant::now();
        let answer = tokio::time::timeout(TIMEOUT, call_on(&mut self.conn, prepared)).await;
        match answer {
            Ok(Ok(ok)) => {
                let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                self.tally.latencies_us.push(us);
                if !ok {
                    self.tally.unexpected += 1;
                    let body = self.conn.as_ref().map(|c| shorten(c.body()));
                    self.tally.note(format!(
                        "{what}: unexpected answer {}",
                        body.unwrap_or_default()
                    ));
                }
                ok
            }
            Ok(Err(e)) => self.failed(format!("{what}: {e}")),
            Err(_) => self.failed(format!("{what}: no answer within {} s", TIMEOUT.as_secs())),
        }
    }

    /// Counts an I/O failure and drops the connection; always `false`.
    fn failed(&mut self, problem: String) -> bool {
        self.tally.io_errors += 1;
        self.conn = None;
        self.tally.note(problem);
        false
    }
}

impl Tally {
    /// Keeps and shows the first few problems.
    fn note(&mut self, problem: String) {
        if self.problems.len() < PROBLEMS_KEPT {
            eprintln!("soak: {problem}");
            self.problems.push(problem);
        }
    }

    /// Its figures over `measured` time.
    fn result(&self, measured: Duration) -> LoadResult {
        LoadResult::from_answers(
            self.latencies_us.clone(),
            self.unexpected,
            self.io_errors,
            measured,
        )
    }
}

/// One call on `conn`, opening it first when there is none.
async fn call_on(conn: &mut Option<Conn>, prepared: &Prepared) -> io::Result<bool> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(Conn::open(prepared).await?),
    };
    conn.call(prepared).await
}

/// An answer for a problem line: lossy UTF-8, at most 200 characters.
fn shorten(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// (4): the CLI, and the two callers that must see what it changed.
struct Flipper {
    cli: Cli,
    /// `require_scopes` expecting `true`, over HTTP and WebSocket.
    granted: [Prepared; 2],
    /// `require_scopes` expecting -32099, over HTTP and WebSocket.
    revoked: [Prepared; 2],
    /// Over one HTTP keep-alive connection.
    http: Caller,
    /// Over one WebSocket session.
    ws: Caller,
    flips: Flips,
}

/// The grants and revokes, and whether each was seen at once.
#[derive(Default)]
struct Flips {
    /// Grants and revokes tried.
    tried: u64,
    /// Of which revokes.
    revokes: u64,
    /// Seen by the first call after the command, over HTTP.
    seen_http: u64,
    /// Seen by the first call after the command, over WebSocket.
    seen_ws: u64,
    /// Revokes seen over both.
    revokes_seen: u64,
    /// Milliseconds each successful CLI command took.
    cli_ms: Vec<f64>,
    /// CLI commands that failed or timed out.
    cli_failures: u64,
    /// The first [`PROBLEMS_KEPT`] of their errors.
    cli_problems: Vec<String>,
}

impl Flipper {
    /// Signs up [`SIGN_IN_USER`] and [`FLIP_USER`], signs the latter in,
    /// opens its two connections and checks it is refused `require_scopes`
    /// on both.
    async fn set_up(rpcguard: &ServerProcess) -> anyhow::Result<Flipper> {
        account::sign_up(rpcguard, SIGN_IN_USER).await?;
        account::sign_up(rpcguard, FLIP_USER).await?;
        let token = account::sign_in(rpcguard, FLIP_USER).await?;
        let check = |transport, granted| {
            Prepared::new(&requests::require_scopes(
                rpcguard, transport, &token, granted,
            ))
        };
        let mut flipper = Flipper {
            cli: Cli::of(rpcguard)?,
            granted: [check(Transport::Http, true), check(Transport::Ws, true)],
            revoked: [check(Transport::Http, false), check(Transport::Ws, false)],
            http: Caller::default(),
            ws: Caller::default(),
            flips: Flips::default(),
        };
        let [http, ws] = &flipper.revoked;
        let refused_http = flipper.http.call(http, "before any grant, HTTP").await;
        let refused_ws = flipper.ws.call(ws, "before any grant, WS").await;
        if !(refused_http && refused_ws) {
            bail!("{FLIP_USER} was not refused require_scopes before any grant");
        }
        flipper.http.tally = Tally::default();
        flipper.ws.tally = Tally::default();
        Ok(flipper)
    }

    /// Grants, then revokes, … once a second until `end`.
    async fn run(&mut self, end: Instant) {
        let mut ticks = every_period();
        for n in 0.. {
            ticks.tick().await;
            if Instant::now() >= end {
                return;
            }
            self.flip(n).await;
        }
    }

    /// Flip `n`: a grant when even, a revoke when odd; then one call on
    /// each transport, at once, which must see it.
    async fn flip(&mut self, n: u64) {
        let grant = n.is_multiple_of(2);
        let verb = if grant { "grant" } else { "revoke" };
        self.flips.tried += 1;
        self.flips.revokes += u64::from(!grant);
        let started = Instant::now();
        if let Err(e) = self.cli.run(verb).await {
            self.flips
                .cli_failed(format!("flip {n}: rpcguard user {verb}: {e:#}"));
            return;
        }
        self.flips
            .cli_ms
            .push(started.elapsed().as_secs_f64() * 1000.0);
        let [http, ws] = if grant { &self.granted } else { &self.revoked };
        let what_http = format!("flip {n} ({verb}), HTTP");
        let what_ws = format!("flip {n} ({verb}), WS");
        let (seen_http, seen_ws) =
            tokio::join!(self.http.call(http, &what_http), self.ws.call(ws, &what_ws));
        self.flips.seen_http += u64::from(seen_http);
        self.flips.seen_ws += u64::from(seen_ws);
        self.flips.revokes_seen += u64::from(!grant && seen_http && seen_ws);
    }
}

impl Flips {
    /// Counts a failed CLI command; keeps and shows the first few.
    fn cli_failed(&mut self, problem: String) {
        self.cli_failures += 1;
        if self.cli_problems.len() < PROBLEMS_KEPT {
            eprintln!("soak: {problem}");
            self.cli_problems.push(problem);
        }
    }

    /// Whether every flip was made and seen at once on both transports.
    fn all_seen(&self) -> bool {
        self.tried > 0
            && self.cli_failures == 0
            && self.seen_http == self.tried
            && self.seen_ws == self.tried
    }
}

/// `rpcguard user grant|revoke FLIP_USER scope1 --data-dir DIR`, with the
/// server's binary and data dir.
struct Cli {
    program: PathBuf,
    data_dir: PathBuf,
}

impl Cli {
    /// The CLI of `server`, which must have a data dir.
    fn of(server: &ServerProcess) -> anyhow::Result<Cli> {
        let data_dir = server
            .data_dir()
            .with_context(|| format!("{} has no data dir for the CLI", server.name))?;
        Ok(Cli {
            program: server.program.clone(),
            data_dir: data_dir.to_owned(),
        })
    }

    /// Runs `rpcguard user VERB FLIP_USER scope1` and waits for it to exit;
    /// an error when it fails, or when it takes longer than [`TIMEOUT`]
    /// (then it is killed).
    async fn run(&self, verb: &str) -> anyhow::Result<()> {
        let child = Command::new(&self.program)
            .args(["user", verb, FLIP_USER, SCOPE, "--data-dir"])
            .arg(&self.data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        let pid = child.id();
        let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
        let Ok(joined) = tokio::time::timeout(TIMEOUT, waiting).await else {
            kill(pid);
            bail!("still running after {} s (killed)", TIMEOUT.as_secs());
        };
        let output = joined.context("waiting for the CLI")??;
        if !output.status.success() {
            bail!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

/// SIGKILLs the CLI process `pid`, which this harness started.
fn kill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions. The pid is still the
    // CLI's: only its waiting thread reaps it, and it had not exited.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// The server's RSS over the run.
#[derive(Default)]
struct RssSamples {
    /// (seconds since the start, KiB), once a second.
    readings: Vec<(f64, u64)>,
    /// Readings that failed (the process gone?).
    failed_reads: u64,
}

/// The two RSS windows compared, and their medians.
struct RssWindows {
    /// "first minute", or "first 20 % (8 s)".
    first_name: String,
    /// "last minute", or "last 20 % (8 s)".
    last_name: String,
    /// Median KiB of the first window.
    first: f64,
    /// Median KiB of the last window.
    last: f64,
}

impl RssWindows {
    /// Last ÷ first.
    fn ratio(&self) -> f64 {
        self.last / self.first
    }

    /// Whether the last window is within [`RSS_TOLERANCE`] of the first.
    fn pass(&self) -> bool {
        (self.ratio() - 1.0).abs() <= RSS_TOLERANCE
    }
}

impl RssSamples {
    /// The first and the last minute of a run of `length` seconds (at least
    /// [`MINUTE_WINDOWS_FROM`]), else its first and last fifth.
    fn windows(&self, length: f64) -> RssWindows {
        let (window, first_name, last_name) = if length >= MINUTE_WINDOWS_FROM {
            (60.0, "first minute".to_owned(), "last minute".to_owned())
        } else {
            let window = length * SHORT_WINDOW_SHARE;
            let share = SHORT_WINDOW_SHARE * 100.0;
            (
                window,
                format!("first {share:.0} % ({window:.0} s)"),
                format!("last {share:.0} % ({window:.0} s)"),
            )
        };
        RssWindows {
            first_name,
            last_name,
            first: self.median_between(0.0, window),
            last: self.median_between(length - window, length),
        }
    }

    /// Median KiB of the readings taken in `[from, to)` seconds.
    fn median_between(&self, from: f64, to: f64) -> f64 {
        let inside: Vec<f64> = self
            .readings
            .iter()
            .filter(|(at, _)| (from..to).contains(at))
            .map(|(_, kib)| *kib as f64)
            .collect();
        median_f64(&inside)
    }

    /// Median KiB of each tenth of a run of `length` seconds.
    fn tenths(&self, length: f64) -> Vec<f64> {
        (0..10)
            .map(|i| self.median_between(length * i as f64 / 10.0, length * (i + 1) as f64 / 10.0))
            .collect()
    }

    /// The lowest and the highest reading, KiB.
    fn range(&self) -> (u64, u64) {
        let kib = || self.readings.iter().map(|(_, kib)| *kib);
        (kib().min().unwrap_or(0), kib().max().unwrap_or(0))
    }
}

/// The console lines at the end of the soak.
fn print_result(r: &SoakResult) {
    println!("soak get_caller HTTP {}", r.http.line());
    println!("soak get_caller WS   {}", r.ws.line());
    println!("soak sign_in         {}", r.sign_in.result(r.length).line());
    let f = &r.flips;
    println!(
        "soak flips: {} tried ({} revokes), {} CLI failures; seen at once over HTTP {}/{}, over WS {}/{} ({} I/O errors)",
        f.tried,
        f.revokes,
        f.cli_failures,
        f.seen_http,
        f.tried,
        f.seen_ws,
        f.tried,
        r.flip_http.io_errors + r.flip_ws.io_errors
    );
    let w = r.rss.windows(r.length.as_secs_f64());
    println!(
        "soak RSS: {} {:.1} MiB, {} {:.1} MiB, ratio {:.3} ({} readings)",
        w.first_name,
        w.first / 1024.0,
        w.last_name,
        w.last / 1024.0,
        w.ratio(),
        r.rss.readings.len()
    );
    println!("soak {}", cpu_line(&r.cpu));
}

/// Every `get_caller` and `sign_in` answer expected, no I/O error anywhere,
/// no failed CLI command.
fn answers_verdict(r: &SoakResult) -> Verdict {
    let f = &r.flips;
    let sign_ins = r.sign_in.latencies_us.len();
    let unexpected = r.http.unexpected + r.ws.unexpected + r.sign_in.unexpected;
    let io_errors = r.http.io_errors
        + r.ws.io_errors
        + r.sign_in.io_errors
        + r.flip_http.io_errors
        + r.flip_ws.io_errors;
    let answered = r.http.requests > 0 && r.ws.requests > 0 && sign_ins > 0;
    Verdict {
        name: "(soak) every get_caller (HTTP, WS) and sign_in answer expected; no I/O error, no failed CLI command"
            .into(),
        measured: format!(
            "**{unexpected} unexpected, {io_errors} I/O errors, {} CLI failures** ({} + {} get_caller, {sign_ins} sign_in answers)",
            f.cli_failures, r.http.requests, r.ws.requests
        ),
        bar: "0".into(),
        pass: answered && unexpected == 0 && io_errors == 0 && f.cli_failures == 0,
    }
}

/// Every flip seen by the first call after the command, on both transports.
fn flips_verdict(r: &SoakResult) -> Verdict {
    let f = &r.flips;
    Verdict {
        name: "(soak) every CLI grant/revoke seen by the first require_scopes call after the command returned, \
               over HTTP and over an open WebSocket session"
            .into(),
        measured: format!(
            "**HTTP {}/{}, WS {}/{}** (revokes seen on both: {}/{})",
            f.seen_http, f.tried, f.seen_ws, f.tried, f.revokes_seen, f.revokes
        ),
        bar: "all".into(),
        pass: f.all_seen(),
    }
}

/// The last window's median RSS within [`RSS_TOLERANCE`] of the first's.
fn rss_verdict(r: &SoakResult) -> Verdict {
    let w = r.rss.windows(r.length.as_secs_f64());
    Verdict {
        name: format!(
            "(soak) server RSS, median of the {} ÷ median of the {}",
            w.last_name, w.first_name
        ),
        measured: format!(
            "**{:.3}** ({:.1} MiB vs {:.1} MiB)",
            w.ratio(),
            w.last / 1024.0,
            w.first / 1024.0
        ),
        bar: format!("{:.2} – {:.2}", 1.0 - RSS_TOLERANCE, 1.0 + RSS_TOLERANCE),
        pass: w.pass(),
    }
}

/// The table of every stream, and where the CPU went.
fn write_streams(r: &SoakResult, out: &mut String) {
    let _ = writeln!(out, "\n## Streams\n");
    let _ = writeln!(
        out,
        "All at once for the whole run ({} s). Latency is from the first byte written to the last byte read \
         (for (3) and (4), including a reconnection after a failure).\n",
        r.length.as_secs()
    );
    let _ = writeln!(
        out,
        "| stream | transport | conns | answers | per second | p50 ms | p99 ms | max ms | unexpected | I/O errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let flip_call = "(4) `require_scopes` right after each CLI flip";
    let rows = [
        (
            "(1) `get_caller`",
            "HTTP keep-alive",
            CONNECTIONS,
            r.http.clone(),
        ),
        ("(2) `get_caller`", "WebSocket", CONNECTIONS, r.ws.clone()),
        (
            "(3) `sign_in` (bcrypt), once a second",
            "HTTP keep-alive",
            1,
            r.sign_in.result(r.length),
        ),
        (
            flip_call,
            "HTTP keep-alive",
            1,
            r.flip_http.result(r.length),
        ),
        (flip_call, "WebSocket", 1, r.flip_ws.result(r.length)),
    ];
    for (stream, transport, conns, l) in rows {
        let _ = writeln!(
            out,
            "| {stream} | {transport} | {conns} | {} | {:.1} | {:.3} | {:.3} | {:.3} | {} | {} |",
            l.requests,
            l.rps,
            load::ms(l.p50_us),
            load::ms(l.p99_us),
            load::ms(l.max_us),
            l.unexpected,
            l.io_errors
        );
    }
    let c = &r.cpu;
    let _ = writeln!(
        out,
        "\nCPU over the run: server {:.2} cores, load generator {:.2}, other processes (the CLI included) {:.2}.",
        c.server, c.client, c.other
    );
}

/// The flips: how many, how long the CLI took, how many were seen.
fn write_flips(r: &SoakResult, out: &mut String) {
    let f = &r.flips;
    let _ = writeln!(out, "\n## CLI grants and revokes\n");
    let _ = writeln!(
        out,
        "{} flips of `{SCOPE}` on `{FLIP_USER}` ({} grants, {} revokes), one a second by `rpcguard user grant|revoke`; \
         {} failed. A command took {:.0} ms (median; max {:.0} ms): process start, SQLite open and commit, on the \
         loaded cores.\n",
        f.tried,
        f.tried - f.revokes,
        f.revokes,
        f.cli_failures,
        median_f64(&f.cli_ms),
        f.cli_ms.iter().copied().fold(0.0, f64::max)
    );
    let _ = writeln!(
        out,
        "The first `require_scopes` call after each command saw the new state over HTTP in **{}/{}** flips and over \
         the WebSocket session in **{}/{}**; every revoke seen on both: {}/{}.",
        f.seen_http, f.tried, f.seen_ws, f.tried, f.revokes_seen, f.revokes
    );
}

/// The server's RSS: the windows compared, the range, each tenth.
fn write_rss(r: &SoakResult, m: &Measured, out: &mut String) {
    let length = r.length.as_secs_f64();
    let w = r.rss.windows(length);
    let (low, high) = r.rss.range();
    let _ = writeln!(out, "\n## Memory (VmRSS of the server)\n");
    let _ = writeln!(out, "| reading | MiB |\n|---|---:|");
    if let Some(idle) = m.memory.of("rpcguard") {
        let _ = writeln!(
            out,
            "| fresh, nothing served yet | {:.1} |",
            mib(idle.fresh)
        );
        let _ = writeln!(
            out,
            "| idle after the account setup | {:.1} |",
            mib(idle.idle_after_setup)
        );
    }
    let _ = writeln!(
        out,
        "| median of the {} | {:.1} |",
        w.first_name,
        w.first / 1024.0
    );
    let _ = writeln!(
        out,
        "| median of the {} | {:.1} |",
        w.last_name,
        w.last / 1024.0
    );
    let _ = writeln!(
        out,
        "| lowest / highest reading of the run | {:.1} / {:.1} |",
        mib(low),
        mib(high)
    );
    if let Some(idle) = m.memory.of("rpcguard") {
        let _ = writeln!(
            out,
            "| idle after the soak | {:.1} |",
            mib(idle.idle_after_load)
        );
    }
    let tenths = r
        .rss
        .tenths(length)
        .iter()
        .map(|kib| format!("{:.1}", kib / 1024.0))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "\nLast ÷ first: **{:.3}** (within {:.0} %: {}). Median of each tenth of the run, MiB: {tenths}. \
         {} readings, {} failed.",
        w.ratio(),
        RSS_TOLERANCE * 100.0,
        if w.pass() { "yes" } else { "**no**" },
        r.rss.readings.len(),
        r.rss.failed_reads
    );
}

/// The first problems of each stream, when there were any.
fn write_problems(r: &SoakResult, out: &mut String) {
    let problems: Vec<&String> = [&r.sign_in, &r.flip_http, &r.flip_ws]
        .into_iter()
        .flat_map(|t| &t.problems)
        .chain(&r.flips.cli_problems)
        .collect();
    if problems.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Problems (the first {PROBLEMS_KEPT} of each stream besides (1) and (2))\n"
    );
    for p in problems {
        let _ = writeln!(out, "- {}", p.replace('|', "\\|"));
    }
}

#[cfg(test)]
mod tests {
    use super::RssSamples;

    /// One reading a second for `length` seconds: `first` KiB, then `last`
    /// KiB from second `switch` on.
    fn readings(length: u32, switch: u32, first: u64, last: u64) -> RssSamples {
        RssSamples {
            readings: (0..length)
                .map(|s| (f64::from(s), if s < switch { first } else { last }))
                .collect(),
            failed_reads: 0,
        }
    }

    #[test]
    fn runs_of_three_minutes_or_more_compare_the_first_and_the_last_minute() {
        let rss = readings(600, 540, 1000, 1200);
        let w = rss.windows(600.0);
        assert_eq!(
            (w.first_name.as_str(), w.last_name.as_str()),
            ("first minute", "last minute")
        );
        assert_eq!((w.first, w.last), (1000.0, 1200.0));
        assert!(!w.pass());
        // Growth within 10 % passes.
        let w = readings(600, 300, 1000, 1050).windows(600.0);
        assert!((w.ratio() - 1.05).abs() < 1e-9 && w.pass());
    }

    #[test]
    fn shorter_runs_compare_the_first_and_the_last_fifth() {
        let w = readings(40, 32, 1000, 1090).windows(40.0);
        assert_eq!(w.first_name, "first 20 % (8 s)");
        assert_eq!(w.last_name, "last 20 % (8 s)");
        assert_eq!((w.first, w.last), (1000.0, 1090.0));
        assert!(w.pass());
        // A shrinking RSS beyond 10 % fails too: "within 10 %" either way.
        assert!(!readings(40, 20, 1000, 850).windows(40.0).pass());
    }

    #[test]
    fn tenths_and_range() {
        let rss = readings(100, 50, 1000, 2000);
        let tenths = rss.tenths(100.0);
        assert_eq!(tenths[..5], [1000.0; 5]);
        assert_eq!(tenths[5..], [2000.0; 5]);
        assert_eq!(rss.range(), (1000, 2000));
    }
}
