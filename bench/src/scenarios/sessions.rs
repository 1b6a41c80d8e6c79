//! (g): N concurrent authenticated idle WebSocket sessions and the server's
//! RSS per session, then the same on the baseline (unauthenticated, for
//! comparison). `--sessions 0` skips it.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use futures::StreamExt;

use super::Scenario;
use crate::harness::Bench;
use crate::load::{Conn, Prepared, Target, Transport};
use crate::record::Measured;
use crate::report::{mib, Verdict};
use crate::requests;
use crate::server::{self, ServerProcess};

/// Sessions opened at once.
const OPEN_AT_ONCE: usize = 128;
/// Calls in flight at once when every session makes its call.
const CALLS_AT_ONCE: usize = 256;
/// Sessions needed for the target to count.
const TARGET_SESSIONS: usize = 10_000;
/// Most KiB per session for the target.
const TARGET_KIB_PER_SESSION: f64 = 64.0;

/// (g), and what it measured on each server.
#[derive(Default)]
pub struct IdleSessions {
    results: Vec<SessionsResult>,
}

/// Scenario (g) on one server.
#[derive(Clone, Debug, Default)]
pub struct SessionsResult {
    /// "rpcguard" or "baseline".
    pub server: &'static str,
    /// Sessions asked for.
    pub wanted: usize,
    /// Sessions opened.
    pub opened: usize,
    /// Sessions that failed to open.
    pub open_failures: usize,
    /// Seconds to open them all.
    pub open_seconds: f64,
    /// Sessions whose call after the idle time got the expected answer.
    pub calls_ok: usize,
    /// RSS before opening, KiB.
    pub rss_before: u64,
    /// RSS with the sessions open and idle, KiB.
    pub rss_open: u64,
    /// RSS after one call on each, KiB.
    pub rss_after_calls: u64,
    /// RSS 3 s after the client closed every session, KiB.
    pub rss_after_close: u64,
    /// Open file descriptors of the server: before, with the sessions open,
    /// 3 s after they were closed.
    pub fds: (usize, usize, usize),
    /// The first failure to open or to answer.
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

    /// The line of the console with the sessions open and called.
    fn held_line(&self) -> String {
        format!(
            "{:<9} sessions: {}/{} open in {:.1} s ({} failed), {} answered a call; RSS {} -> {} (open) -> {} KiB (after a call each): {:.1} KiB/session{}",
            self.server,
            self.opened,
            self.wanted,
            self.open_seconds,
            self.open_failures,
            self.calls_ok,
            self.rss_before,
            self.rss_open,
            self.rss_after_calls,
            self.kib_per_session(),
            self.first_error.as_deref().map(|e| format!("; first error: {e}")).unwrap_or_default()
        )
    }

    /// The line of the console after the sessions closed.
    fn closed_line(&self) -> String {
        format!(
            "{:<9} after closing them: RSS {} KiB, open fds {} (before {}, with the sessions {})",
            self.server, self.rss_after_close, self.fds.2, self.fds.0, self.fds.1
        )
    }

    /// Its row of the sessions table.
    fn table_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {:.1} s | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} | {:.1} MiB | {} / {} / {} | {} |",
            self.server,
            self.wanted,
            self.opened,
            self.open_failures,
            self.open_seconds,
            self.calls_ok,
            mib(self.rss_before),
            mib(self.rss_open),
            mib(self.rss_after_calls),
            self.kib_per_session(),
            mib(self.rss_after_close),
            self.fds.0,
            self.fds.1,
            self.fds.2,
            self.first_error.as_deref().unwrap_or("—")
        )
    }

    fn note_error(&mut self, error: impl ToString) {
        self.first_error.get_or_insert_with(|| error.to_string());
    }
}

impl Scenario for IdleSessions {
    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let n = bench.args.sessions;
            if n == 0 {
                return Ok(());
            }
            // Let the bcrypt threads of the flood go idle first.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let token = bench.account.token.as_str();
            let on_rpcguard = requests::get_caller(&bench.rpcguard, Transport::Ws, token);
            let on_baseline = requests::baseline_ping(&bench.baseline, Transport::Ws, token);
            for (server, target) in [
                (&bench.rpcguard, on_rpcguard),
                (&bench.baseline, on_baseline),
            ] {
                let result = hold_sessions(server, &target, n).await;
                println!("{}", result.held_line());
                println!("{}", result.closed_line());
                self.results.push(result);
            }
            Ok(())
        })
    }

    fn verdicts(&self, _m: &Measured) -> Vec<Verdict> {
        let Some(g) = self.results.iter().find(|g| g.server == "rpcguard") else {
            return Vec::new();
        };
        let per = g.kib_per_session();
        let held = g.opened == g.wanted && g.calls_ok == g.wanted;
        vec![Verdict {
            name: format!(
                "(g) {} authenticated idle WebSocket sessions held, RSS per session",
                g.wanted
            ),
            measured: format!(
                "**{per:.1} KiB**/session; {} open, {} answered a call afterwards",
                g.opened, g.calls_ok
            ),
            bar: "all held, ≤ 64 KiB".into(),
            pass: held && per <= TARGET_KIB_PER_SESSION && g.wanted >= TARGET_SESSIONS,
        }]
    }

    fn write_sections(&self, _m: &Measured, out: &mut String) {
        if self.results.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n## Idle WebSocket sessions (g)\n");
        let _ = writeln!(
            out,
            "| server | sessions wanted | open | open failures | time to open | answered a call afterwards | RSS before | RSS, sessions idle | RSS after a call on each | KiB per session | RSS 3 s after closing them | server fds before / open / after closing | first error |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
        );
        for g in &self.results {
            let _ = writeln!(out, "{}", g.table_row());
        }
        self.write_release_note(out);
        let _ = writeln!(
            out,
            "\nrpcguard's sessions carry the token in the upgrade's `Authorization` header and call `get_caller`; \
             the baseline's call `ping` (no auth). KiB per session = (the larger of the two RSS readings − RSS before) ÷ sessions open."
        );
    }

    fn method(&self, _m: &Measured) -> Vec<String> {
        vec![
            "(g): sessions are opened 128 at a time, held idle 3 s (RSS read), then each makes one call (RSS read again)."
                .to_owned(),
        ]
    }
}

impl IdleSessions {
    /// Whether closing the sessions gave their descriptors back, and
    /// whether the memory stayed with the process anyway.
    fn write_release_note(&self, out: &mut String) {
        let released = self.results.iter().all(|g| g.fds.2 <= g.fds.0 + 8);
        let retained = self.results.iter().any(|g| {
            g.rss_after_close > g.rss_before + (g.rss_open - g.rss_before.min(g.rss_open)) / 2
        });
        if released && retained {
            let _ = writeln!(
                out,
                "\nAfter the sessions closed, each server's open descriptors went back to their earlier count while its \
                 RSS stayed high: memory freed but kept by the allocator (glibc malloc), not sessions still held."
            );
        } else if !released {
            let _ = writeln!(
                out,
                "\n**After the sessions closed, a server kept more open descriptors than before** (see the table): \
                 sessions may not be released."
            );
        }
    }
}

/// Opens `n` WebSocket sessions (authorized at the upgrade when the target
/// has a token), holds them idle, makes one call on each, then closes them,
/// reading the server's RSS and descriptors along the way.
async fn hold_sessions(server: &ServerProcess, target: &Target, n: usize) -> SessionsResult {
    let prepared = Arc::new(Prepared::new(target));
    let mut result = SessionsResult {
        server: server.name,
        wanted: n,
        rss_before: server.rss_kib().unwrap_or(0),
        ..SessionsResult::default()
    };
    result.fds.0 = server::open_fds(server.pid());
    let mut conns = open_sessions(&prepared, n, &mut result).await;
    result.opened = conns.len();
    // Idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    result.rss_open = server.rss_kib().unwrap_or(0);
    result.fds.1 = server::open_fds(server.pid());
    call_on_each(&prepared, &mut conns, &mut result).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    result.rss_after_calls = server.rss_kib().unwrap_or(0);
    drop(conns);
    tokio::time::sleep(Duration::from_secs(3)).await;
    result.rss_after_close = server.rss_kib().unwrap_or(0);
    result.fds.2 = server::open_fds(server.pid());
    result
}

/// Opens `n` sessions, [`OPEN_AT_ONCE`] at a time; times them and counts
/// the failures.
async fn open_sessions(
    prepared: &Arc<Prepared>,
    n: usize,
    result: &mut SessionsResult,
) -> Vec<Conn> {
    let t = Instant::now();
    let opened: Vec<std::io::Result<Conn>> = futures::stream::iter(0..n)
        .map(|_| {
            let prepared = prepared.clone();
            async move { Conn::open(&prepared).await }
        })
        .buffer_unordered(OPEN_AT_ONCE)
        .collect()
        .await;
    result.open_seconds = t.elapsed().as_secs_f64();
    let mut conns = Vec::with_capacity(n);
    for c in opened {
        match c {
            Ok(c) => conns.push(c),
            Err(e) => {
                result.open_failures += 1;
                result.note_error(e);
            }
        }
    }
    conns
}

/// Checks that every session is still open and authorized: one call on each.
async fn call_on_each(prepared: &Arc<Prepared>, conns: &mut [Conn], result: &mut SessionsResult) {
    let answers: Vec<std::io::Result<bool>> = futures::stream::iter(conns.iter_mut())
        .map(|c| {
            let prepared = prepared.clone();
            async move { c.call(&prepared).await }
        })
        .buffer_unordered(CALLS_AT_ONCE)
        .collect()
        .await;
    for a in answers {
        match a {
            Ok(true) => result.calls_ok += 1,
            Ok(false) => result.note_error("unexpected answer"),
            Err(e) => result.note_error(e),
        }
    }
}
