//! Table tests of the language, every published example, and properties.

mod constructs;
mod errors;
mod properties;
mod published;

use super::*;
use proptest::prelude::*;

const PERIOD: i64 = 30_000_000;

fn at(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_micros()
}

/// A pool's figures for a test: current values, history, target.
struct Pool {
    now: i64,
    current: Sample,
    history: Vec<Sample>,
    target: u32,
}

impl Pool {
    fn new(now: &str) -> Self {
        let now = at(now);
        Pool {
            now,
            current: Sample::new(now),
            history: Vec::new(),
            target: 0,
        }
    }
    fn set(mut self, m: Metric, v: f64) -> Self {
        self.current.set(m, v);
        self
    }
    /// `minutes` of history, a sample every 30 s, `f(i)` for sample i
    /// counted back from now (0 = newest).
    fn history(mut self, minutes: i64, m: Metric, f: impl Fn(i64) -> f64) -> Self {
        let n = minutes * 2;
        let mut samples = Vec::new();
        for i in (0..n).rev() {
            let at = self.now - i * PERIOD;
            let mut s = self
                .history
                .iter()
                .find(|s| s.at_micros == at)
                .cloned()
                .unwrap_or_else(|| Sample::new(at));
            s.set(m, f(i));
            samples.push(s);
        }
        let mut merged: Vec<Sample> = self
            .history
            .into_iter()
            .filter(|s| !samples.iter().any(|t| t.at_micros == s.at_micros))
            .collect();
        merged.extend(samples);
        merged.sort_by_key(|s| s.at_micros);
        self.history = merged;
        self
    }
    fn target(mut self, t: u32) -> Self {
        self.target = t;
        self
    }
    fn run(&self, formula: &str) -> Outcome {
        let inputs = Inputs {
            now_micros: self.now,
            current: &self.current,
            history: History {
                samples: &self.history,
                period_micros: PERIOD,
            },
            target_dedicated: self.target,
            deallocation: Word::Requeue,
            seed: 7,
        };
        evaluate_text(formula, &inputs)
    }
}

fn ok(out: &Outcome) -> &Outcome {
    assert!(out.error.is_none(), "unexpected error: {:?}", out.error);
    out
}

fn value(out: &Outcome, name: &str) -> String {
    out.results
        .split(';')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} not in {}", out.results))
        .to_string()
}

fn error_of(formula: &str) -> FormulaError {
    let out = Pool::new("2026-01-05T12:00:00Z").run(formula);
    out.error
        .unwrap_or_else(|| panic!("{formula:?} should fail; results {}", out.results))
}

use super::examples::*;
