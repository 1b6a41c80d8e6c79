//! (j): `get_caller` throughput per signing algorithm (issue 12): one
//! `rpcguard serve --jwt-alg ALG` per algorithm (HS256, EdDSA, ES256,
//! RS256), each against the same run's bare jsonrpsee baseline (`ping`
//! over HTTP keep-alive), alternating like (a); plus what signing and
//! verifying one token costs per algorithm, measured in this process.
//!
//! The server remembers the tokens it verified (`TokenKeys`), so the
//! steady state of `get_caller` with one token checks the signature once;
//! the sign and verify costs show what each algorithm adds to `sign_in` and
//! to a token's first call.

use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::LocalBoxFuture;
use rpcguard_accounts::auth::token::TokenKeys;
use rpcguard_accounts::keys::{KeyAlg, KeySet};

use super::Scenario;
use crate::harness::Bench;
use crate::load::{Conn, Prepared, Target, Transport};
use crate::record::Measured;
use crate::report::{round_list, Bar, Row};
use crate::requests;
use crate::server::{self, Logging, ServerProcess};
use crate::stats::{paired_ratio, summary};

/// The baseline's `ping` over HTTP keep-alive, beside (j)'s runs.
pub const J_BASE: &str = "j-base-http";

/// Each algorithm and the scenario id of its `get_caller` runs.
pub const J_ALGS: [(KeyAlg, &str); 4] = [
    (KeyAlg::HS256, "j-hs256"),
    (KeyAlg::EdDSA, "j-eddsa"),
    (KeyAlg::ES256, "j-es256"),
    (KeyAlg::RS256, "j-rs256"),
];

/// Tokens signed (then verified, each once) per algorithm for the
/// in-process costs.
const COST_TOKENS: usize = 200;

/// (j): throughput per algorithm, and the sign and verify costs.
#[derive(Default)]
pub struct Algorithms {
    costs: Vec<Cost>,
}

/// What one token costs with an algorithm, in this process.
struct Cost {
    alg: KeyAlg,
    sign_us: f64,
    verify_us: f64,
}

impl Scenario for Algorithms {
    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.costs = J_ALGS
                .iter()
                .map(|(alg, _)| sign_and_verify_cost(*alg))
                .collect::<anyhow::Result<_>>()?;
            let mut servers = Vec::new();
            for (alg, id) in J_ALGS {
                servers.push(start(bench, alg, id).await?);
            }
            let base =
                requests::baseline_ping(&bench.baseline, Transport::Http, &bench.account.token);
            for round in 0..bench.args.rounds {
                let mut legs: Vec<Option<&Leg>> = vec![None];
                legs.extend(servers.iter().map(Some));
                if round % 2 == 1 {
                    legs.reverse();
                }
                for leg in legs {
                    bench.wait_for_quiet().await;
                    let measured = match leg {
                        None => bench.measure(&base, bench.load, false).await,
                        Some(leg) => bench.measure_on(&leg.server, &leg.target, bench.load).await,
                    };
                    bench.record(round, leg.map_or(J_BASE, |leg| leg.id), measured);
                }
            }
            Ok(())
        })
    }

    fn rows(&self) -> &'static [Row] {
        ROWS
    }

    fn write_sections(&self, m: &Measured, out: &mut String) {
        let _ = writeln!(
            out,
            "\n## (j) get_caller per signing algorithm\n\n\
             One `rpcguard serve --jwt-alg ALG` per algorithm, each measured beside the bare jsonrpsee `ping` \
             of this run (HTTP keep-alive, {} connections); the ratio is the median of the per-round ratios. \
             Sign and verify: µs per token in the harness's process ({COST_TOKENS} tokens each; every token \
             verified once, so none is remembered).\n\n\
             | algorithm | get_caller req/s | baseline ping req/s | ratio (rounds) | p50 ms | sign µs | verify µs |\n\
             |---|---:|---:|---:|---:|---:|---:|",
            m.args.connections
        );
        let base = summary(m.runs.of(J_BASE));
        for (alg, id) in J_ALGS {
            let runs = m.runs.of(id);
            if runs.is_empty() {
                continue;
            }
            let (ratio, rounds) = paired_ratio(&m.runs, id, J_BASE, |r| r.rps);
            let own = summary(runs);
            let (sign, verify) = self
                .costs
                .iter()
                .find(|c| c.alg == alg)
                .map_or((f64::NAN, f64::NAN), |c| (c.sign_us, c.verify_us));
            let _ = writeln!(
                out,
                "| {alg} | {:.0} | {:.0} | **{ratio:.3}** ({}) | {:.3} | {sign:.1} | {verify:.1} |",
                own.rps,
                base.rps,
                round_list(&rounds),
                own.p50_us / 1000.0,
            );
        }
        let _ = writeln!(
            out,
            "\nThe server remembers a verified token until it expires, so a steady `get_caller` load with one \
             token pays the signature check once; the algorithm shows in `sign_in` (signing) and in each \
             token's first call (verifying)."
        );
    }

    fn method(&self, _m: &Measured) -> Vec<String> {
        vec![
            "(j): four more `rpcguard serve` processes (SQLite, `--jwt-alg HS256|EdDSA|ES256|RS256`, the same extra \
             arguments as the main one), each with the benchmark account and a token of its own; each round runs \
             the baseline's `ping` and `get_caller` on each of them back to back over HTTP keep-alive (order \
             reversed every other round). Sign/verify costs: `TokenKeys::issue` and `TokenKeys::verify` of a \
             fresh key set in the harness (see `bench/src/scenarios/algorithms.rs`)."
                .into(),
        ]
    }
}

/// A server of one algorithm and what its runs send.
struct Leg {
    id: &'static str,
    server: ServerProcess,
    target: Target,
}

/// Starts `rpcguard serve --jwt-alg ALG`, signs the account up and checks
/// that `get_caller` answers with a token of that algorithm.
async fn start(bench: &Bench, alg: KeyAlg, id: &'static str) -> anyhow::Result<Leg> {
    let mut extra = bench.args.rpcguard_args.clone();
    extra.extend(["--jwt-alg".to_owned(), alg.as_str().to_owned()]);
    let server = server::start_rpcguard(
        &bench.rpcguard.program,
        bench.args.bcrypt_cost,
        &extra,
        Logging::Quiet,
    )?;
    let token = crate::account::token_on(&server).await?;
    let header = token.split('.').next().unwrap_or_default();
    let header = base64_json(header).with_context(|| format!("{alg}: the token's header"))?;
    if header["alg"] != alg.as_str() {
        bail!("--jwt-alg {alg}: the server signed with {}", header["alg"]);
    }
    let target = requests::get_caller(&server, Transport::Http, &token);
    let prepared = Prepared::new(&target);
    let mut conn = Conn::open(&prepared).await?;
    if !conn.call(&prepared).await? {
        bail!(
            "{id}: unexpected answer {}",
            String::from_utf8_lossy(conn.body())
        );
    }
    Ok(Leg { id, server, target })
}

fn base64_json(part: &str) -> anyhow::Result<serde_json::Value> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Signs [`COST_TOKENS`] tokens with a fresh key of `alg`, then verifies
/// each once; µs per token for each.
fn sign_and_verify_cost(alg: KeyAlg) -> anyhow::Result<Cost> {
    let set = KeySet::generate(alg, rpcguard_accounts::clock::unix_now().unwrap_or(0))?;
    let keys = TokenKeys::from_key_set(&set, "rpcguard", "rpcguard", Duration::from_secs(3600))?;
    let started = Instant::now();
    let mut tokens = Vec::with_capacity(COST_TOKENS);
    for i in 0..COST_TOKENS {
        tokens.push(keys.issue("bench", "0123456789abcdef", &format!("s{i}"))?.0);
    }
    let sign = started.elapsed();
    let started = Instant::now();
    for token in &tokens {
        if keys.verify(token).is_err() {
            bail!("{alg}: a token it signed does not verify");
        }
    }
    let verify = started.elapsed();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / COST_TOKENS as f64;
    Ok(Cost {
        alg,
        sign_us: per(sign),
        verify_us: per(verify),
    })
}

const ROWS: &[Row] = &[
    Row {
        id: J_BASE,
        label: "(j) baseline ping, HTTP",
        server: "baseline",
        transport: "HTTP keep-alive",
        method: "`ping`",
        own_cpu: true,
        bar: Bar::Baseline,
    },
    Row {
        id: "j-hs256",
        label: "(j) get_caller, HS256",
        server: "rpcguard --jwt-alg HS256",
        transport: "HTTP keep-alive",
        method: "`get_caller`, valid token",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: "j-eddsa",
        label: "(j) get_caller, EdDSA",
        server: "rpcguard --jwt-alg EdDSA",
        transport: "HTTP keep-alive",
        method: "`get_caller`, valid token",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: "j-es256",
        label: "(j) get_caller, ES256",
        server: "rpcguard --jwt-alg ES256",
        transport: "HTTP keep-alive",
        method: "`get_caller`, valid token",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
    Row {
        id: "j-rs256",
        label: "(j) get_caller, RS256",
        server: "rpcguard --jwt-alg RS256",
        transport: "HTTP keep-alive",
        method: "`get_caller`, valid token",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
];
