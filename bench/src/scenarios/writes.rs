//! (m): session writes. Every `sign_in` opens a session and every
//! `refresh` rotates a refresh token, each a write to the store; this
//! measures how many of each a server core does, on SQLite and (with
//! `--database-url`) on PostgreSQL, against Keycloak's sizing figures per
//! vCPU (about 15 password logins/s, 120 refresh-token requests/s).
//!
//! One `rpcguard serve` per store at bcrypt cost 4 (so that the store, not
//! bcrypt, is measured), the sign-in and refresh budgets lifted, at the
//! default log level. Each of the load's connections has an account of its
//! own: it signs in over and over (`sign_in` run), or it signs in once and
//! then rotates its refresh token over and over, each answer's new token
//! sent in the next call (`refresh` run). The figure is answers per second
//! of the server's CPU time (not per wall-clock second: the load generator
//! shares the cores), with the p99 latency beside it.

use std::fmt::Write;
use std::time::Instant;

use anyhow::Context;
use futures::future::LocalBoxFuture;

use super::Scenario;
use crate::account::{self, PASSWORD};
use crate::harness::{Bench, Measurement};
use crate::load::{self, ConnStats, LoadConfig, LoadResult, Prepared};
use crate::record::{Measured, Run};
use crate::report::{round_list, Bar, Row, Verdict};
use crate::requests;
use crate::server::{self, CpuMeter, Logging, ServerProcess};
use crate::stats::{median_f64, summary};

/// `sign_in` on SQLite.
pub const M_SIGNIN_SQLITE: &str = "m-signin-sqlite";
/// `refresh` on SQLite.
pub const M_REFRESH_SQLITE: &str = "m-refresh-sqlite";
/// `sign_in` on PostgreSQL.
pub const M_SIGNIN_PG: &str = "m-signin-pg";
/// `refresh` on PostgreSQL.
pub const M_REFRESH_PG: &str = "m-refresh-pg";

/// The bcrypt cost of the servers of this scenario.
const COST: u32 = 4;
/// Keycloak's sizing guide, per vCPU.
const KEYCLOAK_REFRESH_PER_VCPU: f64 = 120.0;
const KEYCLOAK_LOGIN_PER_VCPU: f64 = 15.0;

/// (m) session writes per server core.
#[derive(Default)]
pub struct Writes {
    /// Whether PostgreSQL was measured.
    postgres: bool,
}

impl Scenario for Writes {
    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let sqlite = start(bench, None).await?;
            // The PostgreSQL server, and its database and admin URLs.
            let postgres = match bench.args.database_url.clone() {
                Some(admin) => {
                    let url = super::propagation::fresh_database(&admin).await?;
                    Some((start(bench, Some(&url)).await?, url, admin))
                }
                None => {
                    println!("(m) on PostgreSQL skipped: no --database-url");
                    None
                }
            };
            self.postgres = postgres.is_some();
            for round in 0..bench.args.rounds {
                let mut stores = vec![(&sqlite, M_SIGNIN_SQLITE, M_REFRESH_SQLITE)];
                if let Some((pg, ..)) = &postgres {
                    stores.push((pg, M_SIGNIN_PG, M_REFRESH_PG));
                }
                for (server, signin_id, refresh_id) in stores {
                    bench.wait_for_quiet().await;
                    let measured = sign_ins(bench, &server.process, &server.users).await;
                    bench.record(round, signin_id, measured);
                    bench.wait_for_quiet().await;
                    let measured = refreshes(bench, &server.process, &server.users).await?;
                    bench.record(round, refresh_id, measured);
                }
            }
            if let Some((server, url, admin)) = postgres {
                drop(server); // the server process is stopped first
                super::propagation::drop_database(&admin, &url).await;
            }
            Ok(())
        })
    }

    fn verdicts(&self, m: &Measured) -> Vec<Verdict> {
        let mut verdicts = vec![per_core_verdict(
            m,
            M_REFRESH_SQLITE,
            "(m) refresh rotations per second of server CPU, SQLite (10 × Keycloak's 120/s per vCPU)",
            10.0 * KEYCLOAK_REFRESH_PER_VCPU,
        )];
        if self.postgres {
            verdicts.push(per_core_verdict(
                m,
                M_REFRESH_PG,
                "(m) refresh rotations per second of server CPU, PostgreSQL (5 × Keycloak's 120/s per vCPU)",
                5.0 * KEYCLOAK_REFRESH_PER_VCPU,
            ));
        }
        verdicts
    }

    fn rows(&self) -> &'static [Row] {
        ROWS
    }

    fn write_notes(&self, m: &Measured, out: &mut String) {
        let mut lines = Vec::new();
        for (id, what) in [
            (M_SIGNIN_SQLITE, "sign_in, SQLite"),
            (M_REFRESH_SQLITE, "refresh, SQLite"),
            (M_SIGNIN_PG, "sign_in, PostgreSQL"),
            (M_REFRESH_PG, "refresh, PostgreSQL"),
        ] {
            let runs = m.runs.of(id);
            if runs.is_empty() {
                continue;
            }
            let keycloak = if id.contains("signin") {
                KEYCLOAK_LOGIN_PER_VCPU
            } else {
                KEYCLOAK_REFRESH_PER_VCPU
            };
            let per_core = median_f64(&per_core_rounds(runs));
            let s = summary(runs);
            lines.push(format!(
                "{what}: **{per_core:.0}/s per server core** ({:.0}/s on {:.2} cores; p50 {:.1} ms, p99 {:.1} ms; {:.1} × Keycloak's {keycloak:.0}/s per vCPU)",
                s.rps,
                crate::stats::cpu_summary(runs).server,
                s.p50_us / 1000.0,
                s.p99_us / 1000.0,
                per_core / keycloak,
            ));
        }
        if !lines.is_empty() {
            let _ = writeln!(
                out,
                "\n(m) session writes at bcrypt cost {COST}, budgets lifted, {} connections each with an account of its own: {}.",
                m.args.connections,
                lines.join("; ")
            );
        }
    }

    fn method(&self, m: &Measured) -> Vec<String> {
        vec![format!(
            "(m): one `rpcguard serve` per store (SQLite in a fresh data dir; PostgreSQL on a fresh database when \
             `--database-url` is given) at bcrypt cost {COST}, default log level, with `--refresh-per-ip 0 \
             --refresh-per-session 0` and the sign-in budgets off; {} accounts, one per connection. `sign_in` run: \
             each connection signs its account in, over and over (a session opened each time; past the live-session \
             limit the oldest is ended). `refresh` run: each connection signs in once, then sends `refresh` with the \
             refresh token of the previous answer, over and over (one rotation each). Per core = answers ÷ the \
             server's CPU seconds in the measured window (see `bench/src/scenarios/writes.rs`).",
            m.args.connections
        )]
    }
}

/// A server of this scenario and its accounts.
struct WritesServer {
    process: ServerProcess,
    users: Vec<String>,
}

/// Starts `rpcguard serve` for (m) (on `database_url` when given) and signs
/// up one account per connection.
async fn start(bench: &Bench, database_url: Option<&str>) -> anyhow::Result<WritesServer> {
    let mut extra = bench.args.rpcguard_args.clone();
    extra.extend(
        ["--refresh-per-ip", "0", "--refresh-per-session", "0"]
            .into_iter()
            .map(str::to_owned),
    );
    if let Some(url) = database_url {
        extra.extend(["--database-url".to_owned(), url.to_owned()]);
    }
    let process = server::start_rpcguard(
        &bench.rpcguard.program,
        COST,
        &extra,
        Logging::DefaultToFile,
    )?;
    let mut users = Vec::with_capacity(bench.load.connections);
    for i in 0..bench.load.connections {
        let user = format!("writer{i}");
        account::sign_up(&process, &user).await?;
        users.push(user);
    }
    Ok(WritesServer { process, users })
}

/// The server's CPU over the measured window of `config`.
async fn server_cpu(server: &ServerProcess, config: LoadConfig) -> crate::server::CpuUse {
    tokio::time::sleep(config.warmup).await;
    let meter = CpuMeter::start(server.pid(), &[]);
    tokio::time::sleep(config.duration).await;
    meter.stop()
}

/// Each connection signs its own account in, over and over.
async fn sign_ins(bench: &Bench, server: &ServerProcess, users: &[String]) -> Measurement {
    let config = bench.load;
    let loads = users.iter().map(|user| {
        let target = requests::sign_in_as(server, user);
        async move { closed_loop(config, || Prepared::new(&target), |_| ()).await }
    });
    let (stats, cpu) = tokio::join!(futures::future::join_all(loads), server_cpu(server, config));
    finish(server, stats, cpu, config)
}

/// Each connection signs in once, then rotates its refresh token over and
/// over.
async fn refreshes(
    bench: &Bench,
    server: &ServerProcess,
    users: &[String],
) -> anyhow::Result<Measurement> {
    let config = bench.load;
    let mut tokens = Vec::with_capacity(users.len());
    for user in users {
        tokens.push(first_refresh_token(server, user).await?);
    }
    let loads = tokens.into_iter().map(|token| async move {
        // The token of the last answer, sent in the next call.
        let token = std::cell::RefCell::new(token);
        closed_loop(
            config,
            || Prepared::new(&requests::refresh(server, &token.borrow())),
            |body: &[u8]| {
                if let Some(next) = refresh_token_of(body) {
                    *token.borrow_mut() = next;
                }
            },
        )
        .await
    });
    let (stats, cpu) = tokio::join!(futures::future::join_all(loads), server_cpu(server, config));
    Ok(finish(server, stats, cpu, config))
}

async fn first_refresh_token(server: &ServerProcess, user: &str) -> anyhow::Result<String> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"sign_in","params":["{user}","{PASSWORD}"]}}"#
    );
    let (status, answer) = crate::load::call_once(server.addr, &body, None).await?;
    refresh_token_of(answer.as_bytes())
        .with_context(|| format!("sign_in of {user}: HTTP {status} {answer}"))
}

fn refresh_token_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["result"]["refresh_token"].as_str().map(str::to_owned)
}

/// One connection's closed loop for `config` (see [`load::conn_loop`]).
async fn closed_loop<N, A>(config: LoadConfig, next: N, answered: A) -> ConnStats
where
    N: FnMut() -> Prepared,
    A: FnMut(&[u8]),
{
    let mut stats = ConnStats::default();
    let measure_from = Instant::now() + config.warmup;
    let end = measure_from + config.duration;
    load::conn_loop(measure_from, end, &mut stats, next, answered).await;
    stats
}

fn finish(
    server: &ServerProcess,
    stats: Vec<ConnStats>,
    cpu: crate::server::CpuUse,
    config: LoadConfig,
) -> Measurement {
    let mut latencies = Vec::new();
    let (mut unexpected, mut io_errors) = (0, 0);
    for s in stats {
        latencies.extend(s.latencies_us);
        unexpected += s.unexpected;
        io_errors += s.io_errors;
    }
    let load = LoadResult::from_answers(latencies, unexpected, io_errors, config.duration);
    Measurement {
        server: server.name,
        run: Run::new(load, cpu, config),
        rss_peak: None,
    }
}

/// Answers per second of server CPU, per round.
fn per_core_rounds(runs: &[Run]) -> Vec<f64> {
    runs.iter()
        .map(|r| r.load.rps / r.cpu.server.max(1e-3))
        .collect()
}

fn per_core_verdict(m: &Measured, id: &str, name: &str, bar: f64) -> Verdict {
    let runs = m.runs.of(id);
    let rounds = per_core_rounds(runs);
    let per_core = median_f64(&rounds);
    let s = summary(runs);
    Verdict {
        name: name.into(),
        measured: format!(
            "**{per_core:.0}/s per core** ({:.0}/s on {:.2} server cores; p99 {:.1} ms; rounds: {})",
            s.rps,
            crate::stats::cpu_summary(runs).server,
            s.p99_us / 1000.0,
            round_list(&rounds)
        ),
        bar: format!("≥ {bar:.0}"),
        pass: !runs.is_empty() && per_core >= bar,
    }
}

const ROWS: &[Row] = &[
    Row {
        id: M_SIGNIN_SQLITE,
        label: "(m) sign_in, SQLite, cost 4",
        server: "rpcguard (SQLite)",
        transport: "HTTP keep-alive",
        method: "`sign_in` (session opened)",
        own_cpu: true,
        bar: Bar::NotPlotted,
    },
    Row {
        id: M_REFRESH_SQLITE,
        label: "(m) refresh, SQLite",
        server: "rpcguard (SQLite)",
        transport: "HTTP keep-alive",
        method: "`refresh` (token rotated)",
        own_cpu: true,
        bar: Bar::NotPlotted,
    },
    Row {
        id: M_SIGNIN_PG,
        label: "(m) sign_in, PostgreSQL, cost 4",
        server: "rpcguard (PostgreSQL)",
        transport: "HTTP keep-alive",
        method: "`sign_in` (session opened)",
        own_cpu: true,
        bar: Bar::NotPlotted,
    },
    Row {
        id: M_REFRESH_PG,
        label: "(m) refresh, PostgreSQL",
        server: "rpcguard (PostgreSQL)",
        transport: "HTTP keep-alive",
        method: "`refresh` (token rotated)",
        own_cpu: true,
        bar: Bar::NotPlotted,
    },
];
