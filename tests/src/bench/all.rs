//! `all`: every benchmark but `snapshot` and `sqs` (which need their own
//! setup: gigabytes of tables, the emulator), [`ROUNDS`] times, at sizes
//! that together take about 15 minutes on the 2-core reference machine.

use std::time::Instant;

use anyhow::{Context, Result};

use super::{Args, Bench};

/// How often each benchmark runs: twice shows how much a figure varies.
const ROUNDS: usize = 2;

/// The benchmarks of one round, in order, at their sizes.
fn plan() -> Vec<Args> {
    let sized = |bench, changes| Args { changes, ..Args::new(bench) };
    vec![
        sized(Bench::Catchup, 1_000_000),
        sized(Bench::Capture, 1_000_000),
        sized(Bench::Load, 2_000_000),
        sized(Bench::Bigtx, 5_000_000),
        sized(Bench::E2e, 1_000_000),
        sized(Bench::Replay, 1_000_000),
        Args { rate: 5000, seconds: 20, ..Args::new(Bench::Latency) },
        Args { rate: 5000, changes: 200_000, ..Args::new(Bench::Cost) },
    ]
}

pub async fn run(args: &Args) -> Result<()> {
    let t0 = Instant::now();
    for round in 1..=ROUNDS {
        for mut step in plan() {
            step.record = args.record.clone();
            eprintln!("== all, round {round} of {ROUNDS}: {} ({:.0} s so far)", step.bench.name(), t0.elapsed().as_secs_f64());
            Box::pin(super::run(&step)).await.with_context(|| format!("{} in round {round}", step.bench.name()))?;
        }
    }
    eprintln!("== all: done in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}
