//! (h): the servers' RSS idle and under (a).
//!
//! Not a run of its own: the harness reads each server's RSS when fresh,
//! after the account setup and after all the load, and the (a) / `ping`
//! HTTP runs of [`super::alternating`] sample it every 100 ms. This file
//! keeps those readings ([`ServerMemory`]), writes the memory section of the
//! report, and judges the idle RSS.

use std::collections::BTreeMap;
use std::fmt::Write;

use futures::future::LocalBoxFuture;

use super::Scenario;
use crate::harness::Bench;
use crate::record::Measured;
use crate::report::{mib, Verdict};
use crate::server::ServerProcess;

/// Most MiB of rpcguard's fresh RSS for the target.
const TARGET_IDLE_MIB: f64 = 10.0;

/// RSS figures of one server, KiB.
#[derive(Default, Clone, Debug)]
pub struct Rss {
    /// Started, nothing served yet.
    pub fresh: u64,
    /// After the account setup and the check of every request.
    pub idle_after_setup: u64,
    /// Highest sample during the measured part of each (a)/ping HTTP run.
    pub under_load_max: Vec<u64>,
    /// After every scenario.
    pub idle_after_load: u64,
}

/// The RSS readings of each server, by server name.
#[derive(Default, Debug)]
pub struct ServerMemory(BTreeMap<&'static str, Rss>);

impl ServerMemory {
    /// Reads `server`'s RSS as started.
    pub fn read_fresh(&mut self, server: &ServerProcess) -> anyhow::Result<()> {
        self.entry(server).fresh = server.rss_kib()?;
        Ok(())
    }

    /// Reads `server`'s RSS after the account setup.
    pub fn read_after_setup(&mut self, server: &ServerProcess) -> anyhow::Result<()> {
        self.entry(server).idle_after_setup = server.rss_kib()?;
        Ok(())
    }

    /// Reads `server`'s RSS after every scenario.
    pub fn read_after_load(&mut self, server: &ServerProcess) -> anyhow::Result<()> {
        self.entry(server).idle_after_load = server.rss_kib()?;
        Ok(())
    }

    /// Keeps the highest RSS sampled during one run on `server`.
    pub fn record_peak(&mut self, server: &'static str, kib: u64) {
        self.0.entry(server).or_default().under_load_max.push(kib);
    }

    /// The readings of `server`, if any.
    pub fn of(&self, server: &str) -> Option<&Rss> {
        self.0.get(server)
    }

    fn entry(&mut self, server: &ServerProcess) -> &mut Rss {
        self.0.entry(server.name).or_default()
    }

    /// The memory section of the report: one row per server.
    pub fn write_section(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Memory (VmRSS of the server process)\n");
        let _ = writeln!(out, "| server | idle, fresh | idle after account setup | peak under (a) / ping, per round | idle after all the load |\n|---|---:|---:|---|---:|");
        for (name, r) in &self.0 {
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
    }
}

/// (h): judges rpcguard's idle RSS.
pub struct Memory;

impl Scenario for Memory {
    fn run<'a>(&'a mut self, _bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>> {
        // The readings are taken by the harness and by (a); see the module.
        Box::pin(async { Ok(()) })
    }

    fn verdicts(&self, m: &Measured) -> Vec<Verdict> {
        let Some(r) = m.memory.of("rpcguard") else {
            return Vec::new();
        };
        vec![Verdict {
            name: "(h) rpcguard idle RSS (started, nothing served yet)".into(),
            measured: format!(
                "**{:.1} MiB** (after the account setup {:.1} MiB; after all the load {:.1} MiB)",
                mib(r.fresh),
                mib(r.idle_after_setup),
                mib(r.idle_after_load)
            ),
            bar: format!("≤ {TARGET_IDLE_MIB} MiB"),
            pass: mib(r.fresh) <= TARGET_IDLE_MIB,
        }]
    }

    fn method(&self, _m: &Measured) -> Vec<String> {
        vec![
            "(h): RSS is `VmRSS` from `/proc/PID/status`; under load it is sampled every 100 ms of the measured part of \
             each (a) run."
                .to_owned(),
        ]
    }
}
