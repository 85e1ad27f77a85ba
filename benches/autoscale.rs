//! Autoscale formulas: parse + evaluate the longest published example
//! with 24 hours of 30-second samples, and a replay of it over a month of
//! history at Azure's default 15-minute interval.
//!
//!   cargo bench --bench autoscale
//!   cargo bench --bench autoscale -- --seconds 5
//!
//! Without `--bench` it is a quick smoke run of itself.

mod common;

use std::time::{Duration, Instant};

use common::{arg, smoke};
use lote::domain::autoscale::{self, examples, History, Inputs, Metric, Sample, Word};

const PERIOD_MICROS: i64 = 30_000_000;

/// `count` samples every 30 s ending at `now`, with a busy daily shape.
fn samples(now: i64, count: i64) -> Vec<Sample> {
    (0..count)
        .map(|i| {
            let at = now - (count - 1 - i) * PERIOD_MICROS;
            let mut s = Sample::new(at);
            let wave = ((i % 2880) as f64 / 2880.0 * std::f64::consts::TAU).sin();
            s.set(Metric::ActiveTasks, (40.0 + 35.0 * wave).round());
            s.set(Metric::RunningTasks, (20.0 + 10.0 * wave).round());
            s.set(Metric::PendingTasks, (60.0 + 45.0 * wave).round());
            s.set(Metric::CPUPercent, 50.0 + 40.0 * wave);
            s.set(Metric::CurrentDedicatedNodes, 4.0);
            s
        })
        .collect()
}

fn inputs<'a>(now: i64, current: &'a Sample, history: &'a [Sample]) -> Inputs<'a> {
    Inputs {
        now_micros: now,
        current,
        history: History {
            samples: history,
            period_micros: PERIOD_MICROS,
        },
        target_dedicated: 2,
        deallocation: Word::Requeue,
        seed: 1,
    }
}

fn main() {
    let smoke = smoke();
    let seconds = arg("--seconds", if smoke { 0 } else { 3 });
    let budget = Duration::from_millis(if smoke { 200 } else { seconds * 1000 });
    let formula = examples::longest();
    let now = 1_764_000_000_000_000i64;
    let day = samples(now, 2880);
    let current = day.last().cloned().unwrap();

    // Parse + evaluate, as `lote pool autoscale evaluate` does.
    let started = Instant::now();
    let mut n = 0u64;
    let mut last = None;
    while started.elapsed() < budget {
        let out = autoscale::evaluate_text(formula, &inputs(now, &current, &day));
        assert!(out.error.is_none(), "{:?}", out.error);
        last = out.target_nodes(100);
        n += 1;
    }
    let parse_eval = n as f64 / started.elapsed().as_secs_f64();

    // Evaluate only (the supervisor keeps the parsed formula).
    let parsed = autoscale::parse(formula).unwrap();
    let started = Instant::now();
    let mut m = 0u64;
    while started.elapsed() < budget {
        let out = autoscale::evaluate(&parsed, &inputs(now, &current, &day));
        assert!(out.error.is_none());
        m += 1;
    }
    let eval_only = m as f64 / started.elapsed().as_secs_f64();

    // A month of history replayed at 15-minute steps, each step seeing the
    // day before it.
    let month = samples(now, 30 * 2880);
    let step = 15 * 60 * 1_000_000i64;
    let started = Instant::now();
    let mut steps = 0;
    let mut at = now - 29 * 86_400_000_000;
    while at <= now {
        let end = month.partition_point(|s| s.at_micros <= at);
        let begin = month[..end].partition_point(|s| s.at_micros < at - 86_400_000_000);
        let window = &month[begin..end];
        let current = window.last().cloned().unwrap_or_else(|| Sample::new(at));
        let out = autoscale::evaluate(&parsed, &inputs(at, &current, window));
        assert!(out.error.is_none());
        steps += 1;
        at += step;
    }
    let replay = started.elapsed();

    println!(
        "formula: the longest published example ({} bytes), 2,880 samples (24 h at 30 s)",
        formula.len()
    );
    println!(
        "parse + evaluate: {parse_eval:.0} evaluations/s (goal >= 10,000); target set: {last:?}"
    );
    println!("evaluate only:    {eval_only:.0} evaluations/s");
    println!(
        "replay of 30 days at 15-minute steps: {steps} evaluations in {:.3} s",
        replay.as_secs_f64()
    );
    assert!(n > 0 && m > 0);
}
