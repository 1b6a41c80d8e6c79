//! (i) PostgreSQL: how long a grant or revoke committed by one process
//! takes to reach another rpcguard instance on the same database.
//!
//! Runs only with `--database-url` (or `RPCGUARD_BENCH_DATABASE_URL`): a
//! fresh database is created there, and two `rpcguard serve` instances, A
//! and B, run on it with one shared signing key. The account signs up and
//! in on A; its token is used on B. The harness then opens a store of its
//! own on the database (a separate pool, as a third instance or the
//! `rpcguard user` CLI commits) and, [`Args::propagation_trials`](crate::args::Args::propagation_trials) times:
//!
//! 1. grants `scope1`, and from the moment the grant has committed calls
//!    `require_scopes` on B back to back until it answers `true`;
//! 2. revokes it, and calls until B refuses with -32099.
//!
//! The delay of each write is the time from its commit to the first call
//! that saw it (the calls before it were answered from B's exact
//! in-memory state, which the `LISTEN/NOTIFY` feed had not updated yet).
//! Trials alternate between one HTTP keep-alive connection and one
//! WebSocket session opened before the first write.

use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::LocalBoxFuture;

use super::Scenario;
use crate::account::{self, USER};
use crate::harness::Bench;
use crate::load::{Conn, Prepared, Transport};
use crate::record::Measured;
use crate::report::Verdict;
use crate::requests;
use crate::server::{self, Logging};

/// The target: p99 of the revoke delays, milliseconds.
const TARGET_P99_MS: f64 = 50.0;
/// Longest wait for a write to be seen; longer counts as not seen.
const GIVE_UP: Duration = Duration::from_secs(5);

/// (i), and what it measured.
#[derive(Default)]
pub struct Propagation {
    result: Option<Delays>,
}

/// The delays measured, milliseconds.
struct Delays {
    grants: Vec<f64>,
    revokes: Vec<f64>,
    /// Writes not seen within [`GIVE_UP`].
    not_seen: usize,
    /// Calls made while waiting, in all.
    calls: u64,
}

impl Scenario for Propagation {
    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(url) = bench.args.database_url.clone() else {
                return Ok(());
            };
            bench.wait_for_quiet().await;
            self.result = Some(measure(bench, &url).await?);
            Ok(())
        })
    }

    fn verdicts(&self, _m: &Measured) -> Vec<Verdict> {
        let Some(d) = &self.result else {
            return Vec::new();
        };
        let (p50, p99, max) = percentiles(&d.revokes);
        vec![Verdict {
            name: "(i) PostgreSQL: a committed revoke to the first refused call on another instance, p99".into(),
            measured: format!(
                "**{p99:.1} ms** (p50 {p50:.1} ms, max {max:.1} ms over {} revokes; {} writes not seen within {} s)",
                d.revokes.len(),
                d.not_seen,
                GIVE_UP.as_secs()
            ),
            bar: format!("≤ {TARGET_P99_MS} ms, every write seen"),
            pass: p99 <= TARGET_P99_MS && d.not_seen == 0,
        }]
    }

    fn write_sections(&self, _m: &Measured, out: &mut String) {
        let _ = writeln!(
            out,
            "\n## PostgreSQL: writes reaching another instance (i)\n"
        );
        let Some(d) = &self.result else {
            let _ = writeln!(
                out,
                "Not measured in this run: it needs a PostgreSQL server (`bench/run.sh --database-url postgres://user:pw@host/db`, or `RPCGUARD_BENCH_DATABASE_URL`)."
            );
            return;
        };
        let _ = writeln!(
            out,
            "| write | trials | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|"
        );
        for (name, delays) in [
            ("revoke (B refuses -32099)", &d.revokes),
            ("grant (B answers `true`)", &d.grants),
        ] {
            let (p50, p99, max) = percentiles(delays);
            let _ = writeln!(
                out,
                "| {name} | {} | {p50:.2} | {:.2} | {p99:.2} | {max:.2} |",
                delays.len(),
                quantile(delays, 0.9)
            );
        }
        let _ = writeln!(
            out,
            "\nFrom the commit of a write made by a third process (the harness's own store, as the CLI or a third instance \
             commits) to the first `require_scopes` call on instance B that saw it; trials alternate between an HTTP \
             keep-alive connection and a WebSocket session. {} calls were made while waiting, in all; {} writes were not \
             seen within {} s. The token was issued by instance A.",
            d.calls,
            d.not_seen,
            GIVE_UP.as_secs()
        );
    }

    fn method(&self, _m: &Measured) -> Vec<String> {
        vec![
            "(i): two `rpcguard serve` instances on a fresh PostgreSQL database (one signing key), the account's token from \
             A used on B; a separate store in the harness grants and revokes `scope1`, and right after each commit \
             `require_scopes` is called on B back to back until it shows the change (see `bench/src/scenarios/propagation.rs`)."
                .into(),
        ]
    }
}

/// Starts A and B on a fresh database under `admin_url` and measures.
async fn measure(bench: &Bench, admin_url: &str) -> anyhow::Result<Delays> {
    let url = fresh_database(admin_url).await?;
    let keys = tempfile::Builder::new()
        .prefix("rpcguard-bench-key-")
        .tempdir()?;
    let secret = keys.path().join("secret.key");
    write_private(&secret, &hex(&rand::random::<[u8; 32]>()))?;
    // Both instances on the one database, with the one signing key.
    let mut extra = bench.args.rpcguard_args.clone();
    extra.extend([
        "--database-url".to_owned(),
        url.clone(),
        "--secret-file".to_owned(),
        secret.display().to_string(),
    ]);
    let start = || {
        server::start_rpcguard(
            &bench.rpcguard.program,
            bench.args.bcrypt_cost,
            &extra,
            Logging::Quiet,
        )
    };
    let a = start()?;
    let b = start()?;
    account::sign_up(&a, USER).await?;
    let token = account::sign_in(&a, USER).await?;
    let writer = rpcguard_accounts::store::open(&url, 2)
        .await
        .context("the harness's own store on the database")?;
    let user = rpcguard_accounts::user::Username::parse(USER)
        .map_err(|e| anyhow::anyhow!("{USER}: {e}"))?;
    let scope = rpcguard_accounts::user::Scope::parse("scope1")
        .map_err(|e| anyhow::anyhow!("scope1: {e}"))?;
    let check = |transport, granted| {
        Prepared::new(&requests::require_scopes(&b, transport, &token, granted))
    };
    let transports = [Transport::Http, Transport::Ws];
    let granted = transports.map(|t| check(t, true));
    let revoked = transports.map(|t| check(t, false));
    let mut conns = [
        Conn::open(&granted[0]).await?,
        Conn::open(&granted[1]).await?,
    ];
    for (conn, refused) in conns.iter_mut().zip(&revoked) {
        if !conn.call(refused).await? {
            bail!("B did not refuse require_scopes before any grant");
        }
    }
    let mut delays = Delays {
        grants: Vec::new(),
        revokes: Vec::new(),
        not_seen: 0,
        calls: 0,
    };
    for trial in 0..bench.args.propagation_trials {
        let t = trial % 2;
        writer
            .grant(&user, std::slice::from_ref(&scope))
            .await
            .context("grant")?;
        match seen(&mut conns[t], &granted[t], &mut delays.calls).await? {
            Some(delay) => delays.grants.push(delay),
            None => delays.not_seen += 1,
        }
        writer
            .revoke(&user, std::slice::from_ref(&scope))
            .await
            .context("revoke")?;
        match seen(&mut conns[t], &revoked[t], &mut delays.calls).await? {
            Some(delay) => delays.revokes.push(delay),
            None => delays.not_seen += 1,
        }
    }
    drop(conns);
    drop(writer);
    a.stop();
    b.stop();
    drop_database(admin_url, &url).await;
    Ok(delays)
}

/// Drops the database of `url` (best effort: a leftover only takes space).
pub async fn drop_database(admin_url: &str, url: &str) {
    use sqlx::Connection;
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// Calls `expected` on `conn` until its answer is the expected one;
/// milliseconds from now, or `None` after [`GIVE_UP`].
async fn seen(
    conn: &mut Conn,
    expected: &Prepared,
    calls: &mut u64,
) -> anyhow::Result<Option<f64>> {
    let committed = Instant::now();
    while committed.elapsed() < GIVE_UP {
        *calls += 1;
        if conn.call(expected).await? {
            return Ok(Some(committed.elapsed().as_secs_f64() * 1e3));
        }
    }
    Ok(None)
}

/// Creates a database with a fresh name on the server of `admin_url`;
/// its URL.
pub async fn fresh_database(admin_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connect to --database-url")?;
    let name = format!("rpcguard_bench_{}", hex(&rand::random::<[u8; 8]>()));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .context("create the benchmark database")?;
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

/// Writes `text` to a new file only its owner may read (the server
/// refuses a key file others can read).
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `q` quantile (nearest rank) of `values`, or 0 when empty.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// p50, p99 and max.
fn percentiles(values: &[f64]) -> (f64, f64, f64) {
    (
        quantile(values, 0.5),
        quantile(values, 0.99),
        quantile(values, 1.0),
    )
}
