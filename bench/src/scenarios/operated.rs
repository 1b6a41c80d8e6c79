//! (n) get_caller as operated in production (issue 25): metrics served
//! (`--metrics-addr`), JSON logs at the default level (`--log-format
//! json`), behind a trusted proxy (`--trusted-proxies 127.0.0.1/32`, an
//! `X-Forwarded-For` header on every request), against the bare baseline's
//! `ping` of the same round.

use futures::future::LocalBoxFuture;

use super::Scenario;
use crate::harness::Bench;
use crate::load::{Conn, Prepared, Transport};
use crate::record::Measured;
use crate::report::{Bar, Row, Verdict};
use crate::requests;
use crate::server::{self, Logging};

/// The baseline's `ping` beside (n).
pub const N_BASE: &str = "n-base-http";
/// (n) get_caller with metrics, JSON logs and a trusted proxy's header.
pub const N_OPERATED: &str = "n-operated";

/// (n), on a server of its own.
#[derive(Default)]
pub struct Operated;

impl Scenario for Operated {
    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut extra = bench.args.rpcguard_args.clone();
            extra.extend(
                [
                    "--metrics-addr",
                    "127.0.0.1:0",
                    "--log-format",
                    "json",
                    "--trusted-proxies",
                    "127.0.0.1/32",
                ]
                .into_iter()
                .map(str::to_owned),
            );
            let server = server::start_rpcguard(
                &bench.rpcguard.program,
                bench.args.bcrypt_cost,
                &extra,
                Logging::DefaultToFile,
            )?;
            let token = crate::account::token_on(&server).await?;
            let operated = requests::get_caller_via_proxy(&server, &token);
            let prepared = Prepared::new(&operated);
            let mut conn = Conn::open(&prepared).await?;
            if !conn.call(&prepared).await? {
                anyhow::bail!(
                    "{N_OPERATED}: unexpected answer {}",
                    String::from_utf8_lossy(conn.body())
                );
            }
            let base = requests::baseline_ping(&bench.baseline, Transport::Http, &token);
            for round in 0..bench.args.rounds {
                let mut legs = [(N_BASE, &base, false), (N_OPERATED, &operated, true)];
                if round % 2 == 1 {
                    legs.reverse();
                }
                for (id, target, ours) in legs {
                    bench.wait_for_quiet().await;
                    let measured = if ours {
                        bench.measure_on(&server, target, bench.load).await
                    } else {
                        bench.measure(target, bench.load, false).await
                    };
                    bench.record(round, id, measured);
                }
            }
            server.stop();
            Ok(())
        })
    }

    fn verdicts(&self, m: &Measured) -> Vec<Verdict> {
        vec![super::alternating::throughput_verdict(
            m,
            N_OPERATED,
            N_BASE,
            "(n) get_caller with --metrics-addr, --log-format json and a trusted proxy's X-Forwarded-For req/s ÷ bare jsonrpsee ping req/s (issue 25)",
            0.9,
        )]
    }

    fn rows(&self) -> &'static [Row] {
        ROWS
    }

    fn method(&self, _m: &Measured) -> Vec<String> {
        vec![
            "(n): one more `rpcguard serve` with `--metrics-addr 127.0.0.1:0 --log-format json --trusted-proxies \
             127.0.0.1/32` at the default log level (standard error to a file); every request carries \
             `X-Forwarded-For: 203.0.113.7`, so the client address is resolved from the header, holds a \
             per-client slot and is the call line's `client_addr`. Each round runs it and the baseline's `ping` \
             back to back, the order flipped every round (see `bench/src/scenarios/operated.rs`)."
                .into(),
        ]
    }
}

const ROWS: &[Row] = &[
    Row {
        id: N_BASE,
        label: "(n) baseline ping, HTTP",
        server: "baseline",
        transport: "HTTP keep-alive",
        method: "`ping`",
        own_cpu: true,
        bar: Bar::Baseline,
    },
    Row {
        id: N_OPERATED,
        label: "(n) get_caller, metrics + JSON logs + proxy",
        server: "rpcguard --metrics-addr --log-format json --trusted-proxies",
        transport: "HTTP keep-alive",
        method: "`get_caller`, X-Forwarded-For",
        own_cpu: true,
        bar: Bar::Rpcguard,
    },
];
