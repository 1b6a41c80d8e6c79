//! (a)–(e): rpcguard's calls against the bare baseline, alternating.
//!
//! (a) `get_caller` with a valid token over HTTP keep-alive vs the
//! baseline's `ping`; (b) the same over WebSocket sessions; (c)
//! `require_scopes` denied (-32099); (d) `get_caller` with an invalid token
//! (-32001); (e) `rpc.discover`; (a) again on a second server at log level
//! `warn` (no line per call), and (a) and `ping` at one connection (p50
//! latency). rpcguard runs at its default settings (log level `info`).
//! Targets: issue 10's for (a)–(c) and the latency, issue 6's for (e). Each round runs every one back to back and
//! the order flips every round, so that machine noise hits both servers; the
//! (a) and `ping` HTTP runs also sample the server's RSS for (h).

use std::fmt::Write;

use futures::future::LocalBoxFuture;

use super::Scenario;
use crate::harness::Bench;
use crate::load::{LoadResult, Target, Transport};
use crate::record::Measured;
use crate::report::{round_list, Bar, Row, Verdict};
use crate::requests;
use crate::stats::{cpu_summary, paired_ratio, summary};

/// The baseline's `ping` over HTTP keep-alive.
pub const BASE_HTTP: &str = "base-http";
/// (a) `get_caller` over HTTP keep-alive.
pub const A_HTTP: &str = "a-http";
/// The baseline's `ping` over WebSocket.
pub const BASE_WS: &str = "base-ws";
/// (b) `get_caller` over WebSocket.
pub const B_WS: &str = "b-ws";
/// (c) `require_scopes`, denied.
pub const C_DENIED: &str = "c-denied";
/// (d) `get_caller` with an invalid token.
pub const D_INVALID: &str = "d-invalid";
/// (e) `rpc.discover`.
pub const E_DISCOVER: &str = "e-discover";
/// (a) on a server at log level `warn` (no line per call).
pub const A_HTTP_WARN: &str = "a-http-warn";
/// The baseline's `ping` over HTTP, one connection.
pub const BASE_HTTP_1: &str = "base-http-1";
/// (a) `get_caller` over HTTP, one connection.
pub const A_HTTP_1: &str = "a-http-1";
/// (k) `get_caller` over HTTP on a server with a policy and rate limits.
pub const K_POLICY: &str = "k-policy";

/// (a)–(e) and their baselines.
pub struct Alternating;

/// One scenario id of a round: what it sends, and whether its runs sample
/// the server's RSS.
struct Leg {
    id: &'static str,
    target: Target,
    sample_rss: bool,
    /// One connection instead of the configured number.
    single: bool,
}

/// The legs in the order of even rounds.
fn legs(bench: &Bench) -> Vec<Leg> {
    let (rpcguard, baseline) = (&bench.rpcguard, &bench.baseline);
    let token = bench.account.token.as_str();
    let leg = |id, target, sample_rss| Leg {
        id,
        target,
        sample_rss,
        single: false,
    };
    let single = |id, target| Leg {
        id,
        target,
        sample_rss: false,
        single: true,
    };
    vec![
        leg(
            BASE_HTTP,
            requests::baseline_ping(baseline, Transport::Http, token),
            true,
        ),
        leg(
            A_HTTP,
            requests::get_caller(rpcguard, Transport::Http, token),
            true,
        ),
        leg(
            K_POLICY,
            requests::get_caller(&bench.rpcguard_policy, Transport::Http, &bench.policy_token),
            false,
        ),
        leg(
            BASE_WS,
            requests::baseline_ping(baseline, Transport::Ws, token),
            false,
        ),
        leg(
            B_WS,
            requests::get_caller(rpcguard, Transport::Ws, token),
            false,
        ),
        leg(
            C_DENIED,
            requests::require_scopes_denied(rpcguard, token),
            false,
        ),
        leg(
            D_INVALID,
            requests::get_caller_invalid_token(rpcguard, &bench.account.invalid_token),
            false,
        ),
        leg(E_DISCOVER, requests::discover(rpcguard), false),
        leg(
            A_HTTP_WARN,
            requests::get_caller(&bench.rpcguard_warn, Transport::Http, &bench.warn_token),
            false,
        ),
        single(
            BASE_HTTP_1,
            requests::baseline_ping(baseline, Transport::Http, token),
        ),
        single(
            A_HTTP_1,
            requests::get_caller(rpcguard, Transport::Http, token),
        ),
    ]
}

/// Odd rounds run the first three (baseline, (a), (k)) and each other
/// rpcguard/baseline pair the other way round, and (c)–(e) and the logging
/// leg backwards.
fn order_for_round(mut legs: Vec<Leg>, round: usize) -> Vec<Leg> {
    if round % 2 == 1 {
        legs[0..3].reverse();
        legs.swap(3, 4);
        legs[5..9].reverse();
        legs.swap(9, 10);
    }
    legs
}

impl Scenario for Alternating {
    fn requests(&self, bench: &Bench) -> Vec<(&'static str, Target)> {
        legs(bench)
            .into_iter()
            .map(|leg| (leg.id, leg.target))
            .collect()
    }

    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for round in 0..bench.args.rounds {
                for leg in order_for_round(legs(bench), round) {
                    let mut config = bench.load;
                    if leg.single {
                        config.connections = 1;
                    }
                    bench
                        .measure_and_record(round, leg.id, &leg.target, config, leg.sample_rss)
                        .await;
                }
            }
            Ok(())
        })
    }

    fn verdicts(&self, m: &Measured) -> Vec<Verdict> {
        vec![
            throughput_verdict(
                m,
                A_HTTP,
                BASE_HTTP,
                "(a) get_caller at the default settings (log level info, one line per call) req/s ÷ bare jsonrpsee ping req/s (HTTP)",
                0.95,
            ),
            throughput_verdict(
                m,
                B_WS,
                BASE_WS,
                "(b) get_caller at the default settings req/s ÷ bare jsonrpsee ping req/s (WebSocket)",
                0.95,
            ),
            throughput_verdict(
                m,
                C_DENIED,
                BASE_HTTP,
                "(c) require_scopes denied (-32099) req/s ÷ bare jsonrpsee ping req/s (HTTP)",
                0.90,
            ),
            p50_verdict(m),
            throughput_verdict(
                m,
                E_DISCOVER,
                A_HTTP,
                "(e) rpc.discover req/s ÷ (a) req/s",
                0.8,
            ),
            throughput_verdict(
                m,
                K_POLICY,
                A_HTTP,
                "(k) get_caller with a policy and rate limits req/s ÷ (a) req/s",
                0.9,
            ),
        ]
    }

    fn rows(&self) -> &'static [Row] {
        ROWS
    }

    fn write_notes(&self, m: &Measured, out: &mut String) {
        write_cpu_per_request(m, out);
        write_log_line_share(m, out);
        crate::report::write_noise_warning(m, out);
        write_other_ratios(m, out);
    }
}

/// The median per-round ratio of `num`'s req/s to `den`'s, against `bar`.
pub fn throughput_verdict(m: &Measured, num: &str, den: &str, name: &str, bar: f64) -> Verdict {
    let (ratio, rounds) = paired_ratio(&m.runs, num, den, |r| r.rps);
    Verdict {
        name: name.into(),
        measured: format!(
            "**{ratio:.3}** ({:.0} vs {:.0} req/s; rounds: {})",
            summary(m.runs.of(num)).rps,
            summary(m.runs.of(den)).rps,
            round_list(&rounds)
        ),
        bar: format!("≥ {bar}"),
        pass: ratio >= bar,
    }
}

/// p50 latency at one connection, rpcguard's (a) ÷ the baseline's.
fn p50_verdict(m: &Measured) -> Verdict {
    let (ratio, rounds) = paired_ratio(&m.runs, A_HTTP_1, BASE_HTTP_1, |r| r.p50_us as f64);
    let p50 = |id| summary(m.runs.of(id)).p50_us / 1000.0;
    Verdict {
        name:
            "p50 latency of get_caller at one connection, default settings, ÷ the baseline's (HTTP)"
                .into(),
        measured: format!(
            "**{ratio:.3}** ({:.3} ms vs {:.3} ms; rounds: {})",
            p50(A_HTTP_1),
            p50(BASE_HTTP_1),
            round_list(&rounds)
        ),
        bar: "≤ 1.1".into(),
        pass: ratio <= 1.1,
    }
}

/// What the per-call log line costs: (a) (default log level) beside the
/// same call on a server at `warn`.
fn write_log_line_share(m: &Measured, out: &mut String) {
    let rps = |r: &LoadResult| r.rps;
    let (with_log, rounds) = paired_ratio(&m.runs, A_HTTP, A_HTTP_WARN, rps);
    let (warn_vs_base, _) = paired_ratio(&m.runs, A_HTTP_WARN, BASE_HTTP, rps);
    let cpu = |id| cpu_summary(m.runs.of(id)).server_us_per_req;
    let _ = writeln!(
        out,
        "\nThe per-call log line: (a) runs at the default settings (log level `info`, one line per call, \
         standard error to a file, as an operator runs `rpcguard serve 2> rpcguard.log`); the same call on a \
         second rpcguard at `warn` (no line) reached {warn_vs_base:.3} × the baseline, so (a) with its line \
         is **{with_log:.3}** × the req/s of `warn` (rounds: {}); server CPU {:.1} µs vs {:.1} µs per call, \
         so the line costs {:.0} % of a call's CPU.",
        round_list(&rounds),
        cpu(A_HTTP),
        cpu(A_HTTP_WARN),
        100.0 * (cpu(A_HTTP) - cpu(A_HTTP_WARN)) / cpu(A_HTTP),
    );
}

fn write_cpu_per_request(m: &Measured, out: &mut String) {
    let cpu_a = cpu_summary(m.runs.of(A_HTTP)).server_us_per_req;
    let cpu_base = cpu_summary(m.runs.of(BASE_HTTP)).server_us_per_req;
    let _ = writeln!(
        out,
        "\nServer CPU per request: (a) get_caller {cpu_a:.1} µs vs baseline ping {cpu_base:.1} µs, so on CPU alone \
         rpcguard would reach **{:.3}** × the baseline's throughput (this view does not depend on how the shared \
         cores were split between the server and the load generator).",
        cpu_base / cpu_a
    );
}

fn write_other_ratios(m: &Measured, out: &mut String) {
    let rps = |r: &LoadResult| r.rps;
    let (rc, _) = paired_ratio(&m.runs, C_DENIED, A_HTTP, rps);
    let (rd, rounds) = paired_ratio(&m.runs, D_INVALID, BASE_HTTP, rps);
    let _ = writeln!(
        out,
        "\nOther ratios (no target): (c) ÷ (a) = {rc:.3}; (d) invalid token ÷ baseline ping = {rd:.3} \
         (rounds: {}).",
        round_list(&rounds)
    );
}

const ROWS: &[Row] = &[
    Row {
        id: BASE_HTTP,
        label: "baseline ping, HTTP",
        server: "baseline",
        transport: "HTTP keep-alive",
        method: "`ping`",
        own_cpu: true,
        bar: Bar::Baseline,
    },
    Row {
        id: A_HTTP,
        label: "(a) get_caller, HTTP",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`get_caller`, valid token",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: BASE_WS,
        label: "baseline ping, WS",
        server: "baseline",
        transport: "WebSocket",
        method: "`ping`",
        own_cpu: true,
        bar: Bar::Baseline,
    },
    Row {
        id: B_WS,
        label: "(b) get_caller, WS",
        server: "rpcguard",
        transport: "WebSocket",
        method: "`get_caller`, token at upgrade",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: C_DENIED,
        label: "(c) require_scopes -32099",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`require_scopes` denied (-32099)",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: D_INVALID,
        label: "(d) invalid token -32001",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`get_caller`, bad signature (-32001)",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: A_HTTP_WARN,
        label: "(a) at log level warn",
        server: "rpcguard (RUST_LOG=warn)",
        transport: "HTTP keep-alive",
        method: "`get_caller`, no log line per call",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: BASE_HTTP_1,
        label: "baseline ping, HTTP, 1 conn",
        server: "baseline",
        transport: "HTTP keep-alive",
        method: "`ping`",
        own_cpu: true,
        bar: Bar::Baseline,
    },
    Row {
        id: A_HTTP_1,
        label: "(a) get_caller, HTTP, 1 conn",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`get_caller`, valid token",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: K_POLICY,
        label: "(k) get_caller, policy + limits",
        server: "rpcguard --policy",
        transport: "HTTP keep-alive",
        method: "`get_caller`, valid token, per-caller budget drawn",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: E_DISCOVER,
        label: "(e) rpc.discover",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`rpc.discover`",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
];
