//! `bench/results.md`: the targets of issue 6 with PASS/FAIL, every figure,
//! the machine, the date, the commit and the command.

use std::fmt::Write;
use std::path::Path;

use crate::load::LoadResult;
use crate::{median_f64, Measured};
use crate::{
    A_HTTP, BASE_HTTP, BASE_WS, B_WS, C_DENIED, D_INVALID, E_DISCOVER, F_A_ALONE, F_A_FLOOD,
    F_FLOOD_ALONE, F_FLOOD_DURING,
};

/// Medians over the runs of one scenario.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub requests: u64,
    pub unexpected: u64,
    pub io_errors: u64,
    pub rounds_rps: Vec<f64>,
}

/// What a scenario row shows.
pub struct Row {
    pub id: &'static str,
    pub label: &'static str,
    pub server: &'static str,
    pub transport: &'static str,
    pub method: &'static str,
}

/// Every load scenario, in report (and plot) order.
pub const ROWS: &[Row] = &[
    Row {
        id: BASE_HTTP,
        label: "baseline ping, HTTP",
        server: "baseline",
        transport: "HTTP keep-alive",
        method: "`ping`",
    },
    Row {
        id: A_HTTP,
        label: "(a) get_caller, HTTP",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`get_caller`, valid token",
    },
    Row {
        id: BASE_WS,
        label: "baseline ping, WS",
        server: "baseline",
        transport: "WebSocket",
        method: "`ping`",
    },
    Row {
        id: B_WS,
        label: "(b) get_caller, WS",
        server: "rpcguard",
        transport: "WebSocket",
        method: "`get_caller`, token at upgrade",
    },
    Row {
        id: C_DENIED,
        label: "(c) require_scopes -32099",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`require_scopes` denied (-32099)",
    },
    Row {
        id: D_INVALID,
        label: "(d) invalid token -32001",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`get_caller`, bad signature (-32001)",
    },
    Row {
        id: E_DISCOVER,
        label: "(e) rpc.discover",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`rpc.discover`",
    },
    Row {
        id: F_A_ALONE,
        label: "(f) get_caller, no flood",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "(a) next to the flood runs",
    },
    Row {
        id: F_A_FLOOD,
        label: "(f) get_caller, during flood",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "(a) while sign_in floods",
    },
    Row {
        id: F_FLOOD_ALONE,
        label: "(f) sign_in flood alone",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`sign_in` (bcrypt verify)",
    },
    Row {
        id: F_FLOOD_DURING,
        label: "(f) sign_in during (a)",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`sign_in` while (a) runs",
    },
];

/// Medians of a scenario's runs.
pub fn summary(runs: &[LoadResult]) -> Summary {
    let med = |f: &dyn Fn(&LoadResult) -> f64| median_f64(&runs.iter().map(f).collect::<Vec<_>>());
    Summary {
        rps: med(&|r| r.rps),
        p50_us: med(&|r| r.p50_us as f64),
        p90_us: med(&|r| r.p90_us as f64),
        p99_us: med(&|r| r.p99_us as f64),
        max_us: med(&|r| r.max_us as f64),
        requests: runs.iter().map(|r| r.requests).sum(),
        unexpected: runs.iter().map(|r| r.unexpected).sum(),
        io_errors: runs.iter().map(|r| r.io_errors).sum(),
        rounds_rps: runs.iter().map(|r| r.rps).collect(),
    }
}

/// Median of per-round ratios `f(num) / f(den)` (the runs of one round are
/// adjacent, so each ratio sees the same machine state).
pub fn paired_ratio(
    m: &Measured,
    num: &str,
    den: &str,
    f: fn(&LoadResult) -> f64,
) -> (f64, Vec<f64>) {
    let empty = Vec::new();
    let a = m.runs.get(num).unwrap_or(&empty);
    let b = m.runs.get(den).unwrap_or(&empty);
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect();
    (median_f64(&ratios), ratios)
}

/// Medians of the CPU readings of a scenario.
#[derive(Default)]
pub struct CpuSummary {
    pub server: f64,
    pub client: f64,
    pub other: f64,
    pub server_us_per_req: f64,
}

/// CPU medians of a scenario's runs.
pub fn cpu_summary(m: &Measured, id: &str) -> CpuSummary {
    let c: &[crate::server::CpuUse] = m.cpu.get(id).map(Vec::as_slice).unwrap_or(&[]);
    let r: &[LoadResult] = m.runs.get(id).map(Vec::as_slice).unwrap_or(&[]);
    let med = |f: &dyn Fn(&crate::server::CpuUse) -> f64| {
        median_f64(&c.iter().map(f).collect::<Vec<_>>())
    };
    let per_req: Vec<f64> = c
        .iter()
        .zip(r.iter())
        .map(|(c, r)| {
            if r.rps > 0.0 {
                c.server / r.rps * 1e6
            } else {
                f64::NAN
            }
        })
        .collect();
    CpuSummary {
        server: med(&|c| c.server),
        client: med(&|c| c.client),
        other: med(&|c| c.other),
        server_us_per_req: median_f64(&per_req),
    }
}

/// One target's verdict.
pub struct Verdict {
    pub name: String,
    pub measured: String,
    pub bar: String,
    pub pass: bool,
}

/// The targets of issue 6, measured.
pub fn verdicts(m: &Measured) -> Vec<Verdict> {
    let mut v = Vec::new();
    let list = |r: &[f64]| {
        r.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let s = |id: &str| summary(m.runs.get(id).map(Vec::as_slice).unwrap_or(&[]));

    let (ra, rounds) = paired_ratio(m, A_HTTP, BASE_HTTP, |r| r.rps);
    v.push(Verdict {
        name: "(a) get_caller req/s ÷ bare jsonrpsee ping req/s (HTTP)".into(),
        measured: format!(
            "**{ra:.3}** ({:.0} vs {:.0} req/s; rounds: {})",
            s(A_HTTP).rps,
            s(BASE_HTTP).rps,
            list(&rounds)
        ),
        bar: "≥ 0.85".into(),
        pass: ra >= 0.85,
    });
    let (re, rounds) = paired_ratio(m, E_DISCOVER, A_HTTP, |r| r.rps);
    v.push(Verdict {
        name: "(e) rpc.discover req/s ÷ (a) req/s".into(),
        measured: format!(
            "**{re:.3}** ({:.0} vs {:.0} req/s; rounds: {})",
            s(E_DISCOVER).rps,
            s(A_HTTP).rps,
            list(&rounds)
        ),
        bar: "≥ 0.8".into(),
        pass: re >= 0.8,
    });
    let (rf, rounds) = paired_ratio(m, F_A_FLOOD, F_A_ALONE, |r| r.p99_us as f64);
    v.push(Verdict {
        name: "(f) p99 of get_caller during the sign_in flood ÷ without".into(),
        measured: format!(
            "**{rf:.2}** ({:.2} ms vs {:.2} ms; rounds: {})",
            s(F_A_FLOOD).p99_us / 1000.0,
            s(F_A_ALONE).p99_us / 1000.0,
            list(&rounds)
        ),
        bar: "≤ 3".into(),
        pass: rf <= 3.0,
    });
    let ideal = m.machine.cores as f64 / m.bcrypt_verify_s;
    let alone = s(F_FLOOD_ALONE).rps;
    let during = s(F_FLOOD_DURING).rps;
    v.push(Verdict {
        name: format!(
            "(f) sign_in req/s ÷ (cores ÷ one bcrypt verify) = ÷ ({} ÷ {:.1} ms = {ideal:.2}/s), flood alone",
            m.machine.cores,
            m.bcrypt_verify_s * 1000.0
        ),
        measured: format!("**{:.3}** ({alone:.2} sign_in/s)", alone / ideal),
        bar: "≥ 0.9".into(),
        pass: alone / ideal >= 0.9,
    });
    v.push(Verdict {
        name:
            "(f) the same, flood while (a) runs (the CPU is shared with (a) and the load generator)"
                .into(),
        measured: format!("**{:.3}** ({during:.2} sign_in/s)", during / ideal),
        bar: "≥ 0.9".into(),
        pass: during / ideal >= 0.9,
    });
    if let Some(g) = m.sessions.iter().find(|g| g.server == "rpcguard") {
        let per = g.kib_per_session();
        let held = g.opened == g.wanted && g.calls_ok == g.wanted;
        v.push(Verdict {
            name: format!(
                "(g) {} authenticated idle WebSocket sessions held, RSS per session",
                g.wanted
            ),
            measured: format!(
                "**{per:.1} KiB**/session; {} open, {} answered a call afterwards",
                g.opened, g.calls_ok
            ),
            bar: "all held, ≤ 64 KiB".into(),
            pass: held && per <= 64.0 && g.wanted >= 10_000,
        });
    }
    if let Some(r) = m.rss.get("rpcguard") {
        v.push(Verdict {
            name: "(h) rpcguard idle RSS (started, nothing served yet)".into(),
            measured: format!(
                "**{:.1} MiB** (after the account setup {:.1} MiB; after all the load {:.1} MiB)",
                mib(r.fresh),
                mib(r.idle_after_setup),
                mib(r.idle_after_load)
            ),
            bar: "≤ 30 MiB".into(),
            pass: mib(r.fresh) <= 30.0,
        });
    }
    let bad: u64 = m.runs.values().flatten().map(|r| r.unexpected).sum();
    let io: u64 = m.runs.values().flatten().map(|r| r.io_errors).sum();
    v.push(Verdict {
        name: "every answer of every run was the expected result / error code".into(),
        measured: format!("{bad} unexpected, {io} I/O errors"),
        bar: "0".into(),
        pass: bad == 0 && io == 0,
    });
    v
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The whole report.
pub fn markdown(m: &Measured, svg: &Path) -> String {
    let mut out = String::new();
    let a = &m.args;
    let _ = writeln!(out, "# rpcguard benchmark results\n");
    let _ = writeln!(
        out,
        "Generated by the harness of issue 6 (`examples/bench/`, baseline `examples/baseline.rs`). \
         Reproduce with:\n\n```sh\n{}\n```\n",
        m.command
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| date (UTC) | {} |", m.date);
    let _ = writeln!(out, "| commit | `{}` |", m.commit);
    let _ = writeln!(
        out,
        "| machine | {} cores (`nproc`), {}, {} RAM, Linux {} |",
        m.machine.cores, m.machine.model, m.machine.mem_total, m.machine.kernel
    );
    let _ = writeln!(
        out,
        "| settings | warm-up {} s + {} s measured per run, {} rounds (medians), {} connections, sign_in flood {} connections, {} idle sessions, bcrypt cost {}, load generator on {} thread(s), open-file limit {} |",
        a.warmup, a.duration, a.rounds, a.connections, m.flood_connections, a.sessions, a.bcrypt_cost, a.client_threads, m.nofile
    );
    let _ = writeln!(
        out,
        "| noise control | before each run the harness waited until other processes used < {} cores (≤ {} s per run, ≤ {} s in all); it waited {:.0} s in all |",
        a.quiet_below, a.quiet_wait, a.quiet_budget, m.quiet_waited
    );
    let _ = writeln!(
        out,
        "| total run time | {:.0} s |\n",
        m.total_time.as_secs_f64()
    );

    let _ = writeln!(out, "## Targets (issue 6)\n");
    let _ = writeln!(
        out,
        "| target | measured | bar | result |\n|---|---|---|---|"
    );
    for v in verdicts(m) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            v.name,
            v.measured,
            v.bar,
            if v.pass { "PASS" } else { "**FAIL**" }
        );
    }

    let _ = writeln!(out, "\n## Throughput and latency\n");
    let _ = writeln!(
        out,
        "Medians over the rounds; every connection keeps one request in flight. \
         ![throughput and p99 per scenario]({})\n",
        svg.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "| scenario | server | transport | call | conns | req/s | p50 ms | p90 ms | p99 ms | max ms | answers | unexpected | I/O errors | req/s per round | server CPU (cores) | server CPU µs/req | load gen. CPU (cores) | other processes' CPU (cores) |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    );
    for row in ROWS {
        let Some(runs) = m.runs.get(row.id) else {
            continue;
        };
        let s = summary(runs);
        let conns = if row.id == F_FLOOD_ALONE || row.id == F_FLOOD_DURING {
            m.flood_connections
        } else {
            a.connections
        };
        let rounds = s
            .rounds_rps
            .iter()
            .map(|r| {
                if *r < 100.0 {
                    format!("{r:.2}")
                } else {
                    format!("{r:.0}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let rps = if s.rps < 100.0 {
            format!("{:.2}", s.rps)
        } else {
            format!("{:.0}", s.rps)
        };
        let c = cpu_summary(m, row.id);
        let cpu_cells = if row.id == F_FLOOD_DURING {
            "(see the row above: one server) | | | ".to_owned()
        } else {
            format!(
                "{:.2} | {:.0} | {:.2} | {:.2} ",
                c.server, c.server_us_per_req, c.client, c.other
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {}|",
            row.label,
            row.server,
            row.transport,
            row.method,
            conns,
            rps,
            s.p50_us / 1000.0,
            s.p90_us / 1000.0,
            s.p99_us / 1000.0,
            s.max_us / 1000.0,
            s.requests,
            s.unexpected,
            s.io_errors,
            rounds,
            cpu_cells
        );
    }
    let cpu_a = cpu_summary(m, A_HTTP).server_us_per_req;
    let cpu_base = cpu_summary(m, BASE_HTTP).server_us_per_req;
    let _ = writeln!(
        out,
        "\nServer CPU per request: (a) get_caller {cpu_a:.0} µs vs baseline ping {cpu_base:.0} µs, so on CPU alone \
         rpcguard would reach **{:.3}** × the baseline's throughput (this view does not depend on how the shared \
         cores were split between the server and the load generator).",
        cpu_base / cpu_a
    );
    let noisy = m
        .cpu
        .values()
        .flatten()
        .map(|c| c.other)
        .fold(0.0f64, f64::max);
    if noisy > 0.1 {
        let _ = writeln!(
            out,
            "\n**Noise:** other processes used up to {noisy:.2} cores during some runs (see the last column); \
             the alternation spreads it over both servers, but figures of those rounds are less reliable."
        );
    }
    let (rb, rounds) = paired_ratio(m, B_WS, BASE_WS, |r| r.rps);
    let (rc, _) = paired_ratio(m, C_DENIED, A_HTTP, |r| r.rps);
    let (rd, _) = paired_ratio(m, D_INVALID, A_HTTP, |r| r.rps);
    let _ = writeln!(
        out,
        "\nOther ratios (no target in issue 6): (b) WS get_caller ÷ baseline WS ping = **{rb:.3}** (rounds: {}); \
         (c) ÷ (a) = {rc:.3}; (d) ÷ (a) = {rd:.3}.",
        rounds.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        out,
        "\nbcrypt: one verify at cost {} takes {:.1} ms in the harness process (the fastest of: {}; measured on a quiet machine just before the (f) runs), so {} cores can do at most {:.2} sign_in/s.",
        a.bcrypt_cost,
        m.bcrypt_verify_s * 1000.0,
        m.bcrypt_verify_samples.iter().map(|x| format!("{:.1} ms", x * 1000.0)).collect::<Vec<_>>().join(", "),
        m.machine.cores,
        m.machine.cores as f64 / m.bcrypt_verify_s
    );
    let alone = m.runs.get(F_FLOOD_ALONE).map(Vec::as_slice).unwrap_or(&[]);
    let alone_cpu = m.cpu.get(F_FLOOD_ALONE).map(Vec::as_slice).unwrap_or(&[]);
    let adjusted: Vec<f64> = alone
        .iter()
        .zip(alone_cpu)
        .map(|(r, c)| r.rps / ((m.machine.cores as f64 - c.other).max(0.1) / m.bcrypt_verify_s))
        .collect();
    let _ = writeln!(
        out,
        "Flood alone, per round: the server used {} cores while other processes used {} cores; sign_in/s ÷ ((cores − other processes' cores) ÷ one verify) = {} (median **{:.3}**), i.e. how much of the CPU left to it bcrypt used.",
        alone_cpu.iter().map(|c| format!("{:.2}", c.server)).collect::<Vec<_>>().join(", "),
        alone_cpu.iter().map(|c| format!("{:.2}", c.other)).collect::<Vec<_>>().join(", "),
        adjusted.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", "),
        median_f64(&adjusted)
    );

    let _ = writeln!(out, "\n## Memory (VmRSS of the server process)\n");
    let _ = writeln!(out, "| server | idle, fresh | idle after account setup | peak under (a) / ping, per round | idle after all the load |\n|---|---:|---:|---|---:|");
    for (name, r) in &m.rss {
        let _ = writeln!(
            out,
            "| {name} | {:.1} MiB | {:.1} MiB | {} | {:.1} MiB |",
            mib(r.fresh),
            mib(r.idle_after_setup),
            r.under_load_max
                .iter()
                .map(|k| format!("{:.1} MiB", mib(*k)))
                .collect::<Vec<_>>()
                .join(", "),
            mib(r.idle_after_load)
        );
    }
    if !m.sessions.is_empty() {
        let _ = writeln!(out, "\n## Idle WebSocket sessions (g)\n");
        let _ = writeln!(
            out,
            "| server | sessions wanted | open | open failures | time to open | answered a call afterwards | RSS before | RSS, sessions idle | RSS after a call on each | KiB per session | RSS 3 s after closing them | server fds before / open / after closing | first error |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
        );
        for g in &m.sessions {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} s | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} | {:.1} MiB | {} / {} / {} | {} |",
                g.server,
                g.wanted,
                g.opened,
                g.open_failures,
                g.open_seconds,
                g.calls_ok,
                mib(g.rss_before),
                mib(g.rss_open),
                mib(g.rss_after_calls),
                g.kib_per_session(),
                mib(g.rss_after_close),
                g.fds.0,
                g.fds.1,
                g.fds.2,
                g.first_error.as_deref().unwrap_or("—")
            );
        }
        let released = m.sessions.iter().all(|g| g.fds.2 <= g.fds.0 + 8);
        let retained = m.sessions.iter().any(|g| {
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
        let _ = writeln!(
            out,
            "\nrpcguard's sessions carry the token in the upgrade's `Authorization` header and call `get_caller`; \
             the baseline's call `ping` (no auth). KiB per session = (the larger of the two RSS readings − RSS before) ÷ sessions open."
        );
    }

    let _ = writeln!(out, "\n## Method\n");
    let _ = writeln!(
        out,
        "- Both servers run as separate processes on 127.0.0.1, started by the harness: `rpcguard serve` on a fresh \
         temporary SQLite data dir with sign-in throttling disabled and `RUST_LOG=warn`; the baseline is \
         `examples/baseline.rs`, a bare jsonrpsee 0.26 server (no middleware, no auth) whose `ping` answers an object \
         shaped like `get_caller`'s. Both use tokio's default multi-threaded runtime (one worker per core).\n\
         - The load generator runs in the harness process, on the same machine ({} cores shared by the servers and \
         the load generator), so only ratios within one run are meaningful: each round runs the baseline and rpcguard \
         scenarios back to back, the order flips every round, and the targets use the median of the per-round ratios.\n\
         - Each connection is a closed loop (one request in flight) over a raw HTTP/1.1 keep-alive socket or a raw \
         WebSocket session; requests are byte-identical between the baseline and rpcguard apart from the method name \
         (the baseline also receives the `Authorization` header). A request counts when its answer arrives in the \
         measured window; latency is from the first byte written to the last byte read. Every answer is checked \
         (HTTP 200, and the expected `result` or error `code`).\n\
         - (f): `sign_in` with valid credentials from {} concurrent connections keeps every bcrypt worker busy; \
         it runs alone, then (a) runs alone, then both together, each round. The ideal sign_in rate is cores ÷ the \
         time of one `bcrypt::verify` at the same cost measured in the harness process while the servers are idle (the fastest of 5).\n\
         - (g): sessions are opened 128 at a time, held idle 3 s (RSS read), then each makes one call (RSS read again).\n\
         - (h): RSS is `VmRSS` from `/proc/PID/status`; under load it is sampled every 100 ms of the measured part of \
         each (a) run.",
        m.machine.cores, m.flood_connections
    );
    out
}
