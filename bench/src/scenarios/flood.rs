//! (f): a `sign_in` flood at full bcrypt load, alone and while (a) runs.
//!
//! First one bcrypt verify at the server's cost is timed in this process,
//! on a quiet machine, to know the ideal sign_in rate (cores ÷ one verify).
//! Then each round runs the flood alone, (a) alone, and both together.

use std::fmt::Write;
use std::time::Instant;

use anyhow::bail;
use futures::future::LocalBoxFuture;

use super::Scenario;
use crate::account::PASSWORD;
use crate::harness::Bench;
use crate::load::{self, LoadConfig, Target, Transport};
use crate::record::{Measured, Run};
use crate::report::{round_list, Bar, Row, Verdict};
use crate::requests;
use crate::stats::{median_f64, paired_ratio, summary};

/// (a) alone, in the flood's rounds.
pub const F_A_ALONE: &str = "f-a-alone";
/// (a) while the flood runs.
pub const F_A_FLOOD: &str = "f-a-during-flood";
/// The flood alone.
pub const F_FLOOD_ALONE: &str = "f-signin-alone";
/// The flood while (a) runs.
pub const F_FLOOD_DURING: &str = "f-signin-during-a";

/// How many bcrypt verifies are timed (the fastest counts).
const VERIFY_SAMPLES: usize = 5;

/// (f), and the time of one bcrypt verify it measured.
#[derive(Default)]
pub struct Flood {
    /// Seconds of each timed verify, in order.
    verify_samples: Vec<f64>,
}

impl Flood {
    /// Seconds of one bcrypt verify: the fastest sample (other processes
    /// can only slow it down).
    fn verify_seconds(&self) -> f64 {
        self.verify_samples
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }

    /// sign_in/s that the machine's cores can do at most.
    fn ideal_rate(&self, m: &Measured) -> f64 {
        m.machine.cores as f64 / self.verify_seconds()
    }
}

impl Scenario for Flood {
    fn requests(&self, bench: &Bench) -> Vec<(&'static str, Target)> {
        vec![(
            F_FLOOD_ALONE,
            requests::sign_in_as(&bench.rpcguard, crate::account::FLOOD_USER),
        )]
    }

    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            bench.wait_for_quiet().await;
            self.verify_samples = time_bcrypt_verifies(bench.args.bcrypt_cost).await?;
            println!(
                "bcrypt verify at cost {}: {:.1} ms (fastest of {:?})",
                bench.args.bcrypt_cost,
                self.verify_seconds() * 1000.0,
                self.verify_samples
            );
            let get_caller =
                requests::get_caller(&bench.rpcguard, Transport::Http, &bench.account.token);
            let sign_in = requests::sign_in_as(&bench.rpcguard, crate::account::FLOOD_USER);
            let flood_config = LoadConfig {
                connections: bench.flood_connections,
                ..bench.load
            };
            let config = bench.load;
            for round in 0..bench.args.rounds {
                bench
                    .measure_and_record(round, F_FLOOD_ALONE, &sign_in, flood_config, false)
                    .await;
                bench
                    .measure_and_record(round, F_A_ALONE, &get_caller, config, false)
                    .await;
                run_both(bench, round, &get_caller, &sign_in, flood_config).await;
            }
            Ok(())
        })
    }

    fn verdicts(&self, m: &Measured) -> Vec<Verdict> {
        vec![
            p99_during_flood_verdict(m),
            self.flood_verdict(
                m,
                F_FLOOD_ALONE,
                0.9,
                format!(
                    "(f) sign_in req/s ÷ (cores ÷ one bcrypt verify) = ÷ ({} ÷ {:.1} ms = {:.2}/s), flood alone",
                    m.machine.cores,
                    self.verify_seconds() * 1000.0,
                    self.ideal_rate(m)
                ),
            ),
            self.flood_verdict(
                m,
                F_FLOOD_DURING,
                0.5,
                "(f) the same, flood while (a) runs (the CPU is shared with (a) and the load generator)"
                    .into(),
            ),
            sign_in_p99_verdict(m),
        ]
    }

    fn rows(&self) -> &'static [Row] {
        ROWS
    }

    fn write_notes(&self, m: &Measured, out: &mut String) {
        self.write_bcrypt_note(m, out);
        self.write_flood_alone_note(m, out);
    }

    fn method(&self, m: &Measured) -> Vec<String> {
        vec![format!(
            "(f): `sign_in` with valid credentials from {} concurrent connections (one per bcrypt worker: more \
             callers would only queue behind each other, and by Little's law 8 closed-loop callers cannot see a p99 \
             under 1 s below 8 sign_in/s) keeps every bcrypt worker busy; it runs alone, then (a) runs alone, then \
             both together, each round. The ideal sign_in rate is cores ÷ the time of one `bcrypt::verify` at the same \
             cost measured in the harness process while the servers are idle (the fastest of 5). While a sign-in \
             waits or runs the server gives bcrypt its share of the cores (`--bcrypt-share`, default 0.5).",
            m.flood_connections
        )]
    }
}

/// Times [`VERIFY_SAMPLES`] verifies of the benchmark password at `cost`,
/// on the blocking pool.
async fn time_bcrypt_verifies(cost: u32) -> anyhow::Result<Vec<f64>> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
        let hash = bcrypt::hash(PASSWORD, cost)?;
        let mut samples = Vec::with_capacity(VERIFY_SAMPLES);
        for _ in 0..VERIFY_SAMPLES {
            let t = Instant::now();
            if !bcrypt::verify(PASSWORD, &hash)? {
                bail!("bcrypt verify failed");
            }
            samples.push(t.elapsed().as_secs_f64());
        }
        Ok(samples)
    })
    .await?
}

/// (a) and the flood at once: the CPU reading of (a)'s window stands for
/// both, since they share it.
async fn run_both(
    bench: &mut Bench,
    round: usize,
    get_caller: &Target,
    sign_in: &Target,
    flood_config: LoadConfig,
) {
    bench.wait_for_quiet().await;
    let (during, flood) = tokio::join!(
        bench.measure(get_caller, bench.load, false),
        load::run(sign_in, flood_config)
    );
    let flood = Run::new(flood, during.run.cpu, flood_config);
    bench.record(round, F_A_FLOOD, during);
    bench.record_beside(round, F_FLOOD_DURING, flood);
}

/// The p99 latency of sign_in while (a) saturates the CPU.
fn sign_in_p99_verdict(m: &Measured) -> Verdict {
    let p99 = summary(m.runs.of(F_FLOOD_DURING)).p99_us / 1000.0;
    Verdict {
        name: "(f) p99 latency of sign_in while (a) runs".into(),
        measured: format!(
            "**{p99:.0} ms** (p50 {:.0} ms; {} callers, one per bcrypt worker)",
            summary(m.runs.of(F_FLOOD_DURING)).p50_us / 1000.0,
            m.flood_connections
        ),
        bar: "≤ 1000 ms".into(),
        pass: p99 <= 1000.0,
    }
}

fn p99_during_flood_verdict(m: &Measured) -> Verdict {
    let (ratio, rounds) = paired_ratio(&m.runs, F_A_FLOOD, F_A_ALONE, |r| r.p99_us as f64);
    Verdict {
        name: "(f) p99 of get_caller during the sign_in flood ÷ without".into(),
        measured: format!(
            "**{ratio:.2}** ({:.2} ms vs {:.2} ms; rounds: {})",
            summary(m.runs.of(F_A_FLOOD)).p99_us / 1000.0,
            summary(m.runs.of(F_A_ALONE)).p99_us / 1000.0,
            round_list(&rounds)
        ),
        bar: "≤ 3".into(),
        pass: ratio <= 3.0,
    }
}

impl Flood {
    /// The sign_in rate of `id` over the ideal rate, which must reach `bar`.
    fn flood_verdict(&self, m: &Measured, id: &str, bar: f64, name: String) -> Verdict {
        let rate = summary(m.runs.of(id)).rps;
        let share = rate / self.ideal_rate(m);
        Verdict {
            name,
            measured: format!("**{share:.3}** ({rate:.2} sign_in/s)"),
            bar: format!("≥ {bar}"),
            pass: share >= bar,
        }
    }

    fn write_bcrypt_note(&self, m: &Measured, out: &mut String) {
        let samples = self
            .verify_samples
            .iter()
            .map(|x| format!("{:.1} ms", x * 1000.0))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "\nbcrypt: one verify at cost {} takes {:.1} ms in the harness process (the fastest of: {samples}; measured on a quiet machine just before the (f) runs), so {} cores can do at most {:.2} sign_in/s.",
            m.args.bcrypt_cost,
            self.verify_seconds() * 1000.0,
            m.machine.cores,
            self.ideal_rate(m)
        );
    }

    /// How much of the CPU other processes left to the server bcrypt used,
    /// per round of the flood alone.
    fn write_flood_alone_note(&self, m: &Measured, out: &mut String) {
        let runs = m.runs.of(F_FLOOD_ALONE);
        let adjusted: Vec<f64> = runs
            .iter()
            .map(|r| {
                r.load.rps
                    / ((m.machine.cores as f64 - r.cpu.other).max(0.1) / self.verify_seconds())
            })
            .collect();
        let cores = |f: fn(&Run) -> f64| {
            runs.iter()
                .map(|r| format!("{:.2}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "Flood alone, per round: the server used {} cores while other processes used {} cores; sign_in/s ÷ ((cores − other processes' cores) ÷ one verify) = {} (median **{:.3}**), i.e. how much of the CPU left to it bcrypt used.",
            cores(|r| r.cpu.server),
            cores(|r| r.cpu.other),
            round_list(&adjusted),
            median_f64(&adjusted)
        );
    }
}

// sign_in runs at a few per second with second-long latencies: its rows are
// in the table, not on the plot's linear axes.
const ROWS: &[Row] = &[
    Row {
        id: F_A_ALONE,
        label: "(f) get_caller, no flood",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "(a) next to the flood runs",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: F_A_FLOOD,
        label: "(f) get_caller, during flood",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "(a) while sign_in floods",
        own_cpu: true,
        bar: Bar::DuringFlood,
    },
    Row {
        id: F_FLOOD_ALONE,
        label: "(f) sign_in flood alone",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`sign_in` (bcrypt verify)",
        own_cpu: true,
        bar: Bar::NotPlotted,
    },
    Row {
        id: F_FLOOD_DURING,
        label: "(f) sign_in during (a)",
        server: "rpcguard",
        transport: "HTTP keep-alive",
        method: "`sign_in` while (a) runs",
        own_cpu: false,
        bar: Bar::NotPlotted,
    },
];
