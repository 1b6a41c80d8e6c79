//! Waiting for a quiet machine before each run, within limits, so that
//! builds or tests running beside the benchmark disturb it less.

use std::time::{Duration, Instant};

use crate::server::CpuMeter;

/// How long to wait for other processes to go quiet, and how long it took.
pub struct Quiet {
    /// Quiet means other processes use fewer cores than this.
    below: f64,
    /// Most seconds to wait before one run.
    per_run: f64,
    /// Most seconds to wait in the whole benchmark.
    budget: f64,
    /// Seconds waited so far.
    waited: f64,
    /// The servers under test, whose CPU is not noise.
    pids: (u32, u32),
}

impl Quiet {
    /// Limits from the command line; `pids` are the two servers.
    pub fn new(below: f64, per_run: f64, budget: f64, pids: (u32, u32)) -> Quiet {
        Quiet {
            below,
            per_run,
            budget,
            waited: 0.0,
            pids,
        }
    }

    /// Waits until other processes used fewer than `below` cores over half a
    /// second, or the per-run limit or the whole budget is spent.
    pub async fn wait(&mut self) {
        let start = Instant::now();
        loop {
            let spent = start.elapsed().as_secs_f64();
            if spent >= self.per_run || self.waited + spent >= self.budget {
                break;
            }
            if self.others_used_half_a_second().await < self.below {
                break;
            }
        }
        self.waited += start.elapsed().as_secs_f64();
    }

    /// Seconds waited so far.
    pub fn waited(&self) -> f64 {
        self.waited
    }

    async fn others_used_half_a_second(&self) -> f64 {
        let meter = CpuMeter::start(self.pids.0, &[self.pids.1]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        meter.stop().other
    }
}
