//! The scenarios of issue 6, the soak and the PostgreSQL propagation of issue 10, one file each, behind
//! one shape: what a scenario sends (checked before any load), what it runs
//! and measures, and what it adds to each part of the report and the plot.
//!
//! [`all`] is the wiring of a full run: scenarios run in this order, and
//! their rows, targets, notes, sections and method bullets appear in the
//! report in this order. `--soak` runs [`soak`] alone (see [`for_args`]).

pub mod algorithms;
pub mod alternating;
pub mod flood;
pub mod memory;
pub mod operated;
pub mod propagation;
pub mod sessions;
pub mod soak;
pub mod writes;

use futures::future::LocalBoxFuture;

use crate::args::Args;
use crate::harness::Bench;
use crate::load::Target;
use crate::record::Measured;
use crate::report::{Row, Verdict};

/// The scenarios a run with `args` runs: the soak alone with `--soak`,
/// else [`all`], or those of them `--only` names.
pub fn for_args(args: &Args) -> anyhow::Result<Vec<Box<dyn Scenario>>> {
    if args.soak > 0 {
        return Ok(vec![Box::new(soak::Soak::default())]);
    }
    let all = all();
    if let Some(unknown) = args
        .only
        .iter()
        .find(|name| !all.iter().any(|(known, _)| known == name))
    {
        anyhow::bail!(
            "--only {unknown}: no such scenario (one of: {})",
            all.iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|(name, _)| args.only.is_empty() || args.only.iter().any(|only| only == name))
        .map(|(_, scenario)| scenario)
        .collect())
}

/// Every scenario of a full run (`bench/results.md`), in run and report
/// order, with its `--only` name; the soak runs alone (see [`for_args`]).
pub fn all() -> Vec<(&'static str, Box<dyn Scenario>)> {
    vec![
        ("alternating", Box::new(alternating::Alternating)),
        ("flood", Box::new(flood::Flood::default())),
        ("sessions", Box::new(sessions::IdleSessions::default())),
        ("memory", Box::new(memory::Memory)),
        ("propagation", Box::new(propagation::Propagation::default())),
        ("algorithms", Box::new(algorithms::Algorithms::default())),
        ("operated", Box::new(operated::Operated)),
        ("writes", Box::new(writes::Writes::default())),
    ]
}

/// One scenario: what it starts and measures, and how it is reported.
///
/// Load runs go to [`Bench::runs`] (so that any scenario's report can
/// compare with them); anything else a scenario measures it keeps in its
/// own fields, filled by [`Scenario::run`] and read by the report methods.
/// Every report method has an empty default.
pub trait Scenario {
    /// The requests it sends, each named; the harness sends each once and
    /// checks the answer before any load runs.
    fn requests(&self, _bench: &Bench) -> Vec<(&'static str, Target)> {
        Vec::new()
    }

    /// Runs its measurements against the servers of `bench`.
    fn run<'a>(&'a mut self, bench: &'a mut Bench) -> LocalBoxFuture<'a, anyhow::Result<()>>;

    /// Its rows of the "Targets" table (a target, the figure, the bar).
    fn verdicts(&self, _m: &Measured) -> Vec<Verdict> {
        Vec::new()
    }

    /// Its rows of the "Throughput and latency" table and the plot, one per
    /// scenario id it records runs under.
    fn rows(&self) -> &'static [Row] {
        &[]
    }

    /// Paragraphs under the "Throughput and latency" table.
    fn write_notes(&self, _m: &Measured, _out: &mut String) {}

    /// Its own `##` sections, after the memory section.
    fn write_sections(&self, _m: &Measured, _out: &mut String) {}

    /// Its bullets of the "Method" section, without the leading `- `.
    fn method(&self, _m: &Measured) -> Vec<String> {
        Vec::new()
    }
}
