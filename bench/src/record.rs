//! What a benchmark run leaves for the report: every load run by scenario
//! id, each server's memory over the run, and the context (machine, date,
//! commit, command, settings).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::args::Args;
use crate::load::{LoadConfig, LoadResult};
use crate::scenarios::memory::ServerMemory;
use crate::server::{CpuUse, Machine};

/// One measured load run.
#[derive(Clone, Debug)]
pub struct Run {
    /// Throughput, latency and answers of the measured window.
    pub load: LoadResult,
    /// Where the CPU went during the measured window.
    pub cpu: CpuUse,
    /// Connections (or WebSocket sessions) of the run.
    pub connections: usize,
}

impl Run {
    /// A run made with `config`.
    pub fn new(load: LoadResult, cpu: CpuUse, config: LoadConfig) -> Run {
        Run {
            load,
            cpu,
            connections: config.connections,
        }
    }
}

/// The runs of every scenario id, each id's runs in the order they ran
/// (one per round).
#[derive(Debug, Default)]
pub struct Runs(BTreeMap<&'static str, Vec<Run>>);

impl Runs {
    /// Adds a run of `id`.
    pub fn push(&mut self, id: &'static str, run: Run) {
        self.0.entry(id).or_default().push(run);
    }

    /// The runs of `id` (empty when it did not run).
    pub fn of(&self, id: &str) -> &[Run] {
        self.0.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every run of every id.
    pub fn all(&self) -> impl Iterator<Item = &Run> {
        self.0.values().flatten()
    }
}

/// Everything measured, for the report and the plot.
pub struct Measured {
    /// The options of the run.
    pub args: Args,
    /// The command line shown in the report.
    pub command: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// The commit the servers were built from.
    pub commit: String,
    /// When the run ended (RFC 3339, UTC).
    pub date: String,
    /// The open-file soft limit in force.
    pub nofile: u64,
    /// Concurrent `sign_in` callers of the flood.
    pub flood_connections: usize,
    /// Every load run of every scenario.
    pub runs: Runs,
    /// Each server's RSS over the run.
    pub memory: ServerMemory,
    /// Wall time of the whole run.
    pub total_time: Duration,
    /// Seconds spent waiting for other processes to go quiet.
    pub quiet_waited: f64,
}
