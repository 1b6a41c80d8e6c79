//! Medians and ratios over the rounds of a scenario.

use crate::load::LoadResult;
use crate::record::{Run, Runs};

/// Medians over the runs of one scenario.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 90th percentile latency, microseconds.
    pub p90_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Highest latency, microseconds.
    pub max_us: f64,
    /// Answers of every run (a sum, not a median).
    pub requests: u64,
    /// Unexpected answers of every run (a sum).
    pub unexpected: u64,
    /// Connection failures of every run (a sum).
    pub io_errors: u64,
    /// Requests per second of each run, in order.
    pub rounds_rps: Vec<f64>,
}

/// Medians of a scenario's runs.
pub fn summary(runs: &[Run]) -> Summary {
    let med = |f: &dyn Fn(&Run) -> f64| median_f64(&runs.iter().map(f).collect::<Vec<_>>());
    Summary {
        rps: med(&|r| r.load.rps),
        p50_us: med(&|r| r.load.p50_us as f64),
        p90_us: med(&|r| r.load.p90_us as f64),
        p99_us: med(&|r| r.load.p99_us as f64),
        max_us: med(&|r| r.load.max_us as f64),
        requests: runs.iter().map(|r| r.load.requests).sum(),
        unexpected: runs.iter().map(|r| r.load.unexpected).sum(),
        io_errors: runs.iter().map(|r| r.load.io_errors).sum(),
        rounds_rps: runs.iter().map(|r| r.load.rps).collect(),
    }
}

/// Median of per-round ratios `f(num) / f(den)` (the runs of one round are
/// adjacent, so each ratio sees the same machine state), and the ratios.
pub fn paired_ratio(
    runs: &Runs,
    num: &str,
    den: &str,
    f: fn(&LoadResult) -> f64,
) -> (f64, Vec<f64>) {
    let ratios: Vec<f64> = runs
        .of(num)
        .iter()
        .zip(runs.of(den))
        .map(|(x, y)| f(&x.load) / f(&y.load))
        .collect();
    (median_f64(&ratios), ratios)
}

/// Medians of the CPU readings of a scenario.
#[derive(Default)]
pub struct CpuSummary {
    /// Cores used by the server under test.
    pub server: f64,
    /// Cores used by the load generator.
    pub client: f64,
    /// Cores used by every other process (noise).
    pub other: f64,
    /// Server CPU time per answered request, microseconds.
    pub server_us_per_req: f64,
}

/// CPU medians of a scenario's runs.
pub fn cpu_summary(runs: &[Run]) -> CpuSummary {
    let med = |f: &dyn Fn(&Run) -> f64| median_f64(&runs.iter().map(f).collect::<Vec<_>>());
    let per_req: Vec<f64> = runs.iter().map(server_us_per_request).collect();
    CpuSummary {
        server: med(&|r| r.cpu.server),
        client: med(&|r| r.cpu.client),
        other: med(&|r| r.cpu.other),
        server_us_per_req: median_f64(&per_req),
    }
}

/// Server CPU microseconds per answered request of one run.
fn server_us_per_request(run: &Run) -> f64 {
    if run.load.rps > 0.0 {
        run.cpu.server / run.load.rps * 1e6
    } else {
        f64::NAN
    }
}

/// Median of floats (mean of the middle two for an even count).
pub fn median_f64(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
