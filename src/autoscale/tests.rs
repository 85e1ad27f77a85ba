//! Table tests of the language, every published example, and properties.

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

#[test]
fn c01_pending_tasks_starts_with_one_then_follows_the_average() {
    let cold = Pool::new("2026-01-05T12:00:00Z").run(C01);
    assert_eq!(ok(&cold).target_nodes(100), Some(1));
    assert_eq!(cold.deallocation, "taskcompletion");
    let warm = Pool::new("2026-01-05T12:00:00Z")
        .history(10, Metric::PendingTasks, |i| if i < 3 { 12.0 } else { 9.0 })
        .run(C01);
    // 180 s = 6 samples: 12, 12, 12, 9, 9, 9.
    assert_eq!(value(ok(&warm), "pendingTaskSamples"), "10.5");
    assert_eq!(warm.target_nodes(100), Some(10));
    let busy = Pool::new("2026-01-05T12:00:00Z")
        .history(10, Metric::PendingTasks, |_| 400.0)
        .run(C01);
    assert_eq!(ok(&busy).target_nodes(100), Some(25));
}

#[test]
fn c02_preempted_nodes_gives_25_low_priority() {
    let out = Pool::new("2026-01-05T12:00:00Z")
        .history(5, Metric::PreemptedNodeCount, |_| 0.0)
        .run(C02);
    ok(&out);
    assert_eq!(
        out.results,
        "$TargetDedicatedNodes=0;$TargetLowPriorityNodes=25;$NodeDeallocationOption=taskcompletion;maxNumberofVMs=25"
    );
}

#[test]
fn c03_cpu_grows_and_shrinks_by_ten_percent() {
    let hot = Pool::new("2026-01-05T12:00:00Z")
        .set(Metric::CurrentDedicatedNodes, 10.0)
        .history(60, Metric::CPUPercent, |_| 0.9)
        .run(C03);
    assert_eq!(ok(&hot).target_nodes(400), Some(11));
    let cold = Pool::new("2026-01-05T12:00:00Z")
        .set(Metric::CurrentDedicatedNodes, 10.0)
        .history(60, Metric::CPUPercent, |_| 0.1)
        .run(C03);
    assert_eq!(ok(&cold).target_nodes(400), Some(9));
    let steady = Pool::new("2026-01-05T12:00:00Z")
        .set(Metric::CurrentDedicatedNodes, 10.0)
        .history(60, Metric::CPUPercent, |_| 0.5)
        .run(C03);
    assert_eq!(ok(&steady).target_nodes(400), Some(10));
    // No history at all: min() of no samples fails the run, so the pool
    // is left as it is (as Azure does without enough samples).
    let empty = Pool::new("2026-01-05T12:00:00Z").run(C03);
    assert_eq!(empty.error.unwrap().kind, ErrorKind::EmptyList);
}

#[test]
fn c04_the_missing_semicolon_is_reported_where_it_is() {
    let e = error_of(C04);
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!((e.pos.line, e.pos.col), (8, 1));
    assert!(e.message.contains("expected ';'"), "{}", e.message);
    assert!(
        e.message.contains("$NodeDeallocationOption"),
        "{}",
        e.message
    );
}

#[test]
fn c05_five_nodes_on_mondays() {
    let monday = Pool::new("2026-01-05T03:00:00Z").run(C05);
    assert_eq!(ok(&monday).target_nodes(100), Some(5));
    let tuesday = Pool::new("2026-01-06T03:00:00Z").run(C05);
    assert_eq!(ok(&tuesday).target_nodes(100), Some(1));
}

#[test]
fn c06_alias_prints_as_written() {
    let work = Pool::new("2026-01-07T09:30:00Z").run(C06);
    assert_eq!(ok(&work).target_nodes(100), Some(20));
    assert!(
        work.results.starts_with("$TargetDedicated=20;"),
        "{}",
        work.results
    );
    let night = Pool::new("2026-01-07T21:30:00Z").run(C06);
    assert_eq!(ok(&night).target_nodes(100), Some(10));
    let sunday = Pool::new("2026-01-11T09:30:00Z").run(C06);
    assert_eq!(ok(&sunday).target_nodes(100), Some(10));
}

#[test]
fn c07_documented_results_string() {
    let out = Pool::new("2016-10-13T19:18:47.805Z").run(C07);
    assert_eq!(
        ok(&out).results,
        "$TargetDedicatedNodes=10;$NodeDeallocationOption=requeue;$curTime=2016-10-13T19:18:47.805Z;$isWeekday=1;$isWorkingWeekdayHour=0;$workHours=0"
    );
    let friday = Pool::new("2016-10-14T18:36:43.282Z").run(C07);
    assert_eq!(
        ok(&friday).results,
        "$TargetDedicatedNodes=10;$NodeDeallocationOption=requeue;$curTime=2016-10-14T18:36:43.282Z;$isWeekday=1;$isWorkingWeekdayHour=0;$workHours=0"
    );
}

#[test]
fn c08_time_based_with_a_time_zone_shift() {
    let out = Pool::new("2026-01-07T10:00:00Z").run(C08);
    assert_eq!(ok(&out).target_nodes(100), Some(20));
    assert_eq!(out.deallocation, "taskcompletion");
    // 10:00 UTC is 04:00 in MDT: outside working hours there.
    let mdt = C08.replace(
        "$curTime = time();",
        "$curTime = time() + (-6 * TimeInterval_Hour);",
    );
    let out = Pool::new("2026-01-07T10:00:00Z").run(&mdt);
    assert_eq!(ok(&out).target_nodes(100), Some(10));
    assert_eq!(value(&out, "$curTime"), "2026-01-07T04:00:00.000Z");
}

#[test]
fn c09_pending_tasks_with_fallback_and_halving() {
    let cold = Pool::new("2026-01-05T12:00:00Z").target(8).run(C09);
    ok(&cold);
    assert_eq!(value(&cold, "$tasks"), "0");
    assert_eq!(cold.target_nodes(100), Some(4));
    let busy = Pool::new("2026-01-05T12:00:00Z")
        .target(2)
        .history(15, Metric::PendingTasks, |_| 30.0)
        .run(C09);
    assert_eq!(ok(&busy).target_nodes(100), Some(20));
    let few = Pool::new("2026-01-05T12:00:00Z")
        .target(2)
        .history(15, Metric::PendingTasks, |i| if i == 0 { 7.0 } else { 3.0 })
        .run(C09);
    assert_eq!(ok(&few).target_nodes(100), Some(7));
}

#[test]
fn c10_parallel_tasks_capped_at_three() {
    let out = Pool::new("2026-01-05T12:00:00Z")
        .target(1)
        .history(15, Metric::ActiveTasks, |_| 6.0)
        .run(C10);
    ok(&out);
    // cores 4, extra (6-4+3)/4 = 1.25, target 2.25: truncated to 2.
    assert_eq!(value(&out, "$extraVMs"), "1.25");
    assert_eq!(out.target_nodes(100), Some(2));
    let many = Pool::new("2026-01-05T12:00:00Z")
        .target(1)
        .history(15, Metric::ActiveTasks, |_| 60.0)
        .run(C10);
    assert_eq!(ok(&many).target_nodes(100), Some(3));
}

#[test]
fn c11_initial_size_then_idle_to_zero() {
    let young = Pool::new("2024-10-14T10:25:00Z").run(C11);
    assert_eq!(ok(&young).target_nodes(100), Some(4));
    let idle = Pool::new("2024-10-14T12:20:00Z")
        .history(60, Metric::RunningTasks, |_| 0.0)
        .history(60, Metric::ActiveTasks, |_| 0.0)
        .run(C11);
    assert_eq!(ok(&idle).target_nodes(100), Some(0));
    let busy = Pool::new("2024-10-14T12:20:00Z")
        .history(60, Metric::RunningTasks, |i| (i % 3) as f64)
        .history(60, Metric::ActiveTasks, |_| 0.0)
        .run(C11);
    assert_eq!(ok(&busy).target_nodes(100), Some(4));
    // Under 50% of an hour's samples: the whole evaluation fails.
    let sparse = Pool::new("2024-10-14T12:20:00Z")
        .history(20, Metric::RunningTasks, |_| 0.0)
        .run(C11);
    let e = sparse.error.clone().unwrap();
    assert_eq!(e.kind, ErrorKind::InsufficientSampleData);
    assert_eq!(e.kind.code(), "InsufficientSampleData");
    assert_eq!(
        e.message,
        "Insufficient data from data set: $RunningTasks wanted 50%, received 33%"
    );
    assert_eq!(sparse.target_nodes(100), None);
}

#[test]
fn c12_and_c13_placeholders() {
    let out = Pool::new("2026-01-05T12:00:00Z")
        .set(Metric::CurrentDedicatedNodes, 3.0)
        .run(C12);
    assert_eq!(ok(&out).target_nodes(100), Some(3));
    let out = Pool::new("2026-01-05T12:00:00Z").target(5).run(C13);
    assert_eq!(ok(&out).target_nodes(100), Some(0));
    assert_eq!(
        out.results,
        "$TargetDedicatedNodes=0;$NodeDeallocationOption=requeue"
    );
}

// ---- constructs, one row each: formula, the value of `r` it leaves ----

#[test]
fn construct_table() {
    let rows: &[(&str, &str)] = &[
        ("r = 1 + 2 * 3", "7"),
        ("r = (1 + 2) * 3", "9"),
        ("r = 7 / 2", "3.5"),
        ("r = -3 - -4", "1"),
        ("r = !0 + !5", "1"),
        (
            "r = 1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3 && 1 == 1 && 1 != 2",
            "1",
        ),
        ("r = 0 || 0", "0"),
        ("r = 1 ? 2 : 3 ? 4 : 5", "2"),
        ("r = 0 ? 2 : 0 ? 4 : 5", "5"),
        ("r = 1.5e2", "150"),
        ("r = .5", "0.5"),
        ("r = \"abc\" < \"abd\"", "1"),
        ("r = \"b\" == \"b\"", "1"),
        ("r = avg(1, 2, 3, 4)", "2.5"),
        ("r = len(1, 2, 3)", "3"),
        ("r = len()", "0"),
        ("r = sum(1, 2, 3)", "6"),
        ("r = max(1, 9, 3)", "9"),
        ("r = min(4, 2, 8)", "2"),
        ("r = range(4, 2, 8)", "6"),
        ("r = norm(3, 4)", "5"),
        (
            "r = std(2, 4, 4, 4, 5, 5, 7, 9) > 2.13 && std(2, 4, 4, 4, 5, 5, 7, 9) < 2.14",
            "1",
        ),
        ("r = std(5)", "0"),
        ("r = lg(8)", "3"),
        ("r = ln(1)", "0"),
        ("r = log(1000)", "3"),
        ("r = lg(2, 4)", "[1,2]"),
        ("r = percentile($PendingTasks.GetSample(10), 50)", "5.5"),
        ("r = percentile($PendingTasks.GetSample(10), 100)", "10"),
        ("r = val($PendingTasks.GetSample(3), 2)", "10"),
        ("r = $PendingTasks.GetSample(3)", "[8,9,10]"),
        ("r = $PendingTasks.GetSample(3) * 2", "[16,18,20]"),
        (
            "r = $PendingTasks.GetSample(2) + $PendingTasks.GetSample(2)",
            "[18,20]",
        ),
        ("r = 10 - $PendingTasks.GetSample(2)", "[1,0]"),
        ("r = $PendingTasks", "42"),
        ("r = $PendingTasks + 1", "43"),
        ("r = $pendingtasks", "42"),
        ("r = $PendingTasks.Count()", "10"),
        ("r = $PendingTasks.GetSamplePeriod()", "00:00:30"),
        (
            "r = $PendingTasks.HistoryBeginTime()",
            "2026-01-05T11:55:30.000Z",
        ),
        (
            "r = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 10)",
            "50",
        ),
        (
            "r = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5)",
            "100",
        ),
        (
            "r = len($PendingTasks.GetSample(TimeInterval_Minute * 2))",
            "4",
        ),
        (
            "r = $PendingTasks.GetSample(TimeInterval_Minute, TimeInterval_Minute * 2)",
            "[7,8]",
        ),
        (
            "r = $PendingTasks.GetSample(TimeInterval_Minute * 2, TimeInterval_Minute)",
            "[7,8]",
        ),
        (
            "r = len($PendingTasks.GetSample(TimeInterval_Minute * 4, 80))",
            "8",
        ),
        (
            "r = len($PendingTasks.GetSample(TimeInterval_Minute * 4, TimeInterval_Zero, 80))",
            "8",
        ),
        (
            "r = len($PendingTasks.GetSample(time() - TimeInterval_Minute))",
            "2",
        ),
        ("r = TimeInterval_Hour * 1.5", "01:30:00"),
        (
            "r = 2 * TimeInterval_Day + TimeInterval_Second",
            "2.00:00:01",
        ),
        ("r = TimeInterval_Minute / 4", "00:00:15"),
        ("r = TimeInterval_Millisecond", "00:00:00.0010000"),
        ("r = TimeInterval_100ns", "00:00:00.0000001"),
        ("r = -TimeInterval_Minute", "-00:01:00"),
        ("r = TimeInterval_Week == 7 * TimeInterval_Day", "1"),
        ("r = TimeInterval_Year > TimeInterval_Week", "1"),
        ("r = TimeInterval_Zero", "00:00:00"),
        (
            "r = TimeInterval_Microsecond * 1000 == TimeInterval_Millisecond",
            "1",
        ),
        ("r = time()", "2026-01-05T12:00:00.000Z"),
        ("r = time(\"\")", "2026-01-05T12:00:00.000Z"),
        (
            "r = time(\"Mon, 06 Oct 2014 10:20:00 GMT\")",
            "2014-10-06T10:20:00.000Z",
        ),
        (
            "r = time(\"2014-10-06T10:20:00.5+02:00\")",
            "2014-10-06T08:20:00.500Z",
        ),
        ("r = time(\"2014-10-06\")", "2014-10-06T00:00:00.000Z"),
        ("r = time(\"2014-10\")", "2014-10-01T00:00:00.000Z"),
        ("r = time(\"2014\")", "2014-01-01T00:00:00.000Z"),
        (
            "r = time(\"2014-10-06T10:20Z\")",
            "2014-10-06T10:20:00.000Z",
        ),
        ("r = time() - TimeInterval_Hour", "2026-01-05T11:00:00.000Z"),
        ("r = TimeInterval_Hour + time()", "2026-01-05T13:00:00.000Z"),
        ("r = time() - time(\"2026-01-05T11:00:00Z\")", "01:00:00"),
        ("r = time() > time(\"2026-01-05T11:00:00Z\")", "1"),
        (
            "t = time(\"2026-03-08T17:45:09Z\"); r = t.year * 10000 + t.month * 100 + t.day",
            "20260308",
        ),
        (
            "t = time(\"2026-03-08T17:45:09Z\"); r = t.hour * 10000 + t.minute * 100 + t.second",
            "174509",
        ),
        ("r = time(\"2026-03-08T00:00:00Z\").weekday", "7"),
        ("r = time(\"2026-03-09T00:00:00Z\").weekday", "1"),
        ("r = requeue", "requeue"),
        ("r = taskcompletion == taskcompletion", "1"),
        ("x = 1; x = x + 1; r = x", "2"),
        ("$x = 5; r = $x * 2", "10"),
        ("r = 1;;; ;", "1"),
        ("r = 1 // a comment ; r = 2\n", "1"),
        ("r = $TargetDedicatedNodes", "6"),
        ("$TargetDedicated = 3; r = $TargetDedicatedNodes", "3"),
        ("r = $TargetLowPriorityNodes", "0"),
        ("r = $NodeDeallocationOption", "requeue"),
        ("r = $CurrentDedicated", "2"),
        ("r = $TaskSlotsPerNode", "4"),
        ("r = $PendingTaskSlots / $TaskSlotsPerNode", "2"),
        ("r = rand() >= 0 && rand() < 1", "1"),
    ];
    let pool = Pool::new("2026-01-05T12:00:00Z")
        .set(Metric::PendingTasks, 42.0)
        .set(Metric::CurrentDedicatedNodes, 2.0)
        .set(Metric::TaskSlotsPerNode, 4.0)
        .set(Metric::PendingTaskSlots, 8.0)
        .target(6)
        .history(5, Metric::PendingTasks, |i| 10.0 - i as f64);
    for (formula, want) in rows {
        let out = pool.run(formula);
        assert!(out.error.is_none(), "{formula}: {:?}", out.error);
        assert_eq!(&value(&out, "r"), want, "{formula} -> {}", out.results);
    }
}

#[test]
fn rand_repeats_with_the_seed() {
    let pool = Pool::new("2026-01-05T12:00:00Z");
    let a = pool.run("r = rand(); s = rand()");
    let b = pool.run("r = rand(); s = rand()");
    assert_eq!(a.results, b.results);
    assert_ne!(value(&a, "r"), value(&a, "s"));
}

#[test]
fn results_order_and_alias_precedence() {
    let pool = Pool::new("2026-01-05T12:00:00Z").target(1);
    let out = pool.run("zeta = 1; $alpha = 2; Beta = 3; $TargetDedicated = 9; $TargetDedicatedNodes = 4; $NodeDeallocationOption = terminate");
    assert_eq!(
        ok(&out).results,
        "$TargetDedicatedNodes=4;$NodeDeallocationOption=terminate;$alpha=2;Beta=3;zeta=1"
    );
    assert_eq!(out.target_nodes(100), Some(4));
    assert_eq!(out.deallocation, "terminate");
    // Lower case is still the service variable, and prints as written.
    let out = pool.run("$targetDedicatedNodes = 5");
    assert_eq!(
        ok(&out).results,
        "$targetDedicatedNodes=5;$NodeDeallocationOption=requeue"
    );
    assert_eq!(out.target_nodes(100), Some(5));
}

#[test]
fn targets_truncate_and_clamp() {
    let pool = Pool::new("2026-01-05T12:00:00Z");
    for (formula, max, want) in [
        ("$TargetDedicatedNodes = 2.9", 10, Some(2)),
        ("$TargetDedicatedNodes = 0.5", 10, Some(0)),
        ("$TargetDedicatedNodes = -3", 10, Some(0)),
        ("$TargetDedicatedNodes = 50", 10, Some(10)),
        ("x = 1", 10, None),
    ] {
        assert_eq!(ok(&pool.run(formula)).target_nodes(max), want, "{formula}");
    }
}

#[test]
fn stop_keeps_what_was_set_before_it() {
    let out = Pool::new("2026-01-05T12:00:00Z")
        .run("$TargetDedicatedNodes = 3; stop(); $TargetDedicatedNodes = 9");
    assert!(ok(&out).stopped);
    assert_eq!(out.target_nodes(10), Some(3));
    assert!(out
        .trace
        .iter()
        .any(|t| matches!(t, TraceEntry::Stop { line: 1, .. })));
}

#[test]
fn short_circuit_guards_a_failing_sample() {
    // Without history the guarded GetSample would fail the evaluation.
    let out = Pool::new("2026-01-05T12:00:00Z").run(
        "p = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 10);
         r = p > 70 && avg($CPUPercent.GetSample(TimeInterval_Minute * 10, 70)) > 50;
         s = p < 70 ? 1 : avg($CPUPercent.GetSample(TimeInterval_Minute * 10, 70))",
    );
    assert_eq!(value(ok(&out), "r"), "0");
    assert_eq!(value(&out, "s"), "1");
}

#[test]
fn trace_records_reads_samples_and_assignments() {
    let out = Pool::new("2026-01-05T12:00:00Z")
        .target(3)
        .history(5, Metric::PendingTasks, |_| 1.0)
        .run("x = $TargetDedicatedNodes;\n$TargetDedicatedNodes = avg($PendingTasks.GetSample(TimeInterval_Minute * 2, 50))");
    ok(&out);
    assert_eq!(
        out.trace[0],
        TraceEntry::Read {
            line: 1,
            col: 5,
            name: "$TargetDedicatedNodes".into(),
            value: "3".into()
        }
    );
    let sample = out
        .trace
        .iter()
        .find_map(|t| match t {
            TraceEntry::Sample {
                line,
                metric,
                samples,
                percent,
                required_percent,
                ..
            } => Some((*line, metric.clone(), *samples, *percent, *required_percent)),
            _ => None,
        })
        .unwrap();
    assert_eq!(sample, (2, "$PendingTasks".into(), 4, 100.0, Some(50.0)));
    assert!(matches!(
        out.trace.last(),
        Some(TraceEntry::Assign { line: 2, name, value, .. }) if name == "$TargetDedicatedNodes" && value == "1"
    ));
}

// ---- errors, one row each: formula, kind, line, column, words ----

#[test]
fn error_table() {
    let long = format!("x = 1;{}", " ".repeat(8 * 1024));
    let many = "x = 1;".repeat(101);
    let deep_parens = format!("x = {}1{}", "(".repeat(200), ")".repeat(200));
    let long_chain = format!("x = 1{}", " + 1".repeat(300));
    let unary_chain = format!("x = {}1", "-".repeat(300));
    let rows: Vec<(&str, ErrorKind, u32, u32, &str)> = vec![
        ("", ErrorKind::Syntax, 1, 1, "no statements"),
        (
            "// only a comment",
            ErrorKind::Syntax,
            1,
            1,
            "no statements",
        ),
        (&long, ErrorKind::TooLong, 1, 1, "at most 8192"),
        (
            &many,
            ErrorKind::TooManyStatements,
            1,
            601,
            "at most 100 statements",
        ),
        (
            &deep_parens,
            ErrorKind::TooDeep,
            1,
            69,
            "nested more than 64",
        ),
        (
            &long_chain,
            ErrorKind::TooDeep,
            1,
            259,
            "nested more than 64",
        ),
        (
            &unary_chain,
            ErrorKind::TooDeep,
            1,
            68,
            "nested more than 64",
        ),
        (
            "x = 1 +",
            ErrorKind::Syntax,
            1,
            8,
            "expected a value, found the end",
        ),
        (
            "x = (1 + 2",
            ErrorKind::Syntax,
            1,
            11,
            "expected ')' to close '('",
        ),
        ("x = 1 ? 2", ErrorKind::Syntax, 1, 10, "expected ':'"),
        (
            "x = 1\ny = 2",
            ErrorKind::Syntax,
            2,
            1,
            "expected ';' before name y",
        ),
        ("x = 1 & 2", ErrorKind::Syntax, 1, 7, "'&&'"),
        ("x = 1 | 2", ErrorKind::Syntax, 1, 7, "'||'"),
        (
            "x = 1 % 2",
            ErrorKind::Syntax,
            1,
            7,
            "unexpected character '%'",
        ),
        ("x = \"abc", ErrorKind::Syntax, 1, 5, "string is not closed"),
        ("x = $ + 1", ErrorKind::Syntax, 1, 5, "'$' must be followed"),
        (
            "x = /* no */ 1",
            ErrorKind::Syntax,
            1,
            5,
            "expected a value",
        ),
        ("x = time().", ErrorKind::Syntax, 1, 12, "after '.'"),
        (
            "$PendingTasks = 3",
            ErrorKind::ReadOnly,
            1,
            1,
            "$PendingTasks is read-only",
        ),
        (
            "$CurrentDedicated = 3",
            ErrorKind::ReadOnly,
            1,
            1,
            "read-only",
        ),
        (
            "TimeInterval_Hour = 3",
            ErrorKind::ReadOnly,
            1,
            1,
            "constant",
        ),
        (
            "$PendingTask = 3",
            ErrorKind::UnknownVariable,
            1,
            1,
            "did you mean $PendingTasks?",
        ),
        (
            "x = ceil(2.5)",
            ErrorKind::UnknownFunction,
            1,
            5,
            "unknown function ceil; the functions are avg",
        ),
        (
            "x = $PendingTasks.GetSamples(1)",
            ErrorKind::UnknownFunction,
            1,
            19,
            "unknown method GetSamples",
        ),
        (
            "x = time().hours",
            ErrorKind::UnknownVariable,
            1,
            12,
            "unknown field hours",
        ),
        (
            "x = y + 1",
            ErrorKind::UnknownVariable,
            1,
            5,
            "unknown variable y",
        ),
        (
            "x = x + 1",
            ErrorKind::UnknownVariable,
            1,
            5,
            "unknown variable x",
        ),
        (
            "x = $PendngTasks",
            ErrorKind::UnknownVariable,
            1,
            5,
            "did you mean $PendingTasks?",
        ),
        (
            "x = TimeZoneInterval_Hour",
            ErrorKind::UnknownVariable,
            1,
            5,
            "did you mean TimeInterval_Hour?",
        ),
        (
            "x = val(1)",
            ErrorKind::Arity,
            1,
            5,
            "val takes 2 arguments; 1 given",
        ),
        (
            "x = rand(1)",
            ErrorKind::Arity,
            1,
            5,
            "rand takes 0 arguments",
        ),
        ("x = avg()", ErrorKind::Arity, 1, 5, "at least 1"),
        (
            "x = $PendingTasks.GetSample(1, 2, 3, 4)",
            ErrorKind::Arity,
            1,
            19,
            "1 to 3",
        ),
        (
            "x = $PendingTasks.GetSample(1, 50)",
            ErrorKind::Arity,
            1,
            19,
            "GetSample(count) takes one argument",
        ),
        (
            "x = \"a\" + 1",
            ErrorKind::TypeMismatch,
            1,
            9,
            "string + double is not defined",
        ),
        (
            "x = time() + time()",
            ErrorKind::TypeMismatch,
            1,
            12,
            "timestamp + timestamp",
        ),
        (
            "x = TimeInterval_Hour + 1",
            ErrorKind::TypeMismatch,
            1,
            23,
            "timeinterval + double",
        ),
        (
            "x = 1 && \"a\"",
            ErrorKind::TypeMismatch,
            1,
            7,
            "right side of '&&'",
        ),
        (
            "x = time() ? 1 : 2",
            ErrorKind::TypeMismatch,
            1,
            12,
            "condition",
        ),
        (
            "x = avg(time())",
            ErrorKind::TypeMismatch,
            1,
            5,
            "argument 1 of avg",
        ),
        (
            "x = time(5)",
            ErrorKind::TypeMismatch,
            1,
            5,
            "time takes a string",
        ),
        (
            "x = (1).GetSample(1)",
            ErrorKind::TypeMismatch,
            1,
            9,
            "GetSample is a method of the read-only service variables",
        ),
        (
            "x = (1).hour",
            ErrorKind::TypeMismatch,
            1,
            9,
            "belong to a timestamp",
        ),
        (
            "x = $PendingTasks.GetSample(\"a\")",
            ErrorKind::TypeMismatch,
            1,
            19,
            "timeinterval or timestamp",
        ),
        (
            "x = lg(1, 2) + lg(1, 2, 3)",
            ErrorKind::TypeMismatch,
            1,
            14,
            "equal lengths; they are 2 and 3",
        ),
        (
            "$TargetDedicatedNodes = $PendingTasks.GetSample(1)",
            ErrorKind::TypeMismatch,
            1,
            1,
            "wrap a sample",
        ),
        (
            "$TargetDedicatedNodes = time()",
            ErrorKind::TypeMismatch,
            1,
            1,
            "must be a double",
        ),
        (
            "$NodeDeallocationOption = 3",
            ErrorKind::TypeMismatch,
            1,
            1,
            "takes requeue",
        ),
        (
            "x = 1 / 0",
            ErrorKind::DivisionByZero,
            1,
            7,
            "division by zero",
        ),
        (
            "x = TimeInterval_Hour / 0",
            ErrorKind::DivisionByZero,
            1,
            23,
            "division by zero",
        ),
        ("x = lg(0)", ErrorKind::Domain, 1, 5, "lg of 0"),
        (
            "x = percentile(1, 101)",
            ErrorKind::Domain,
            1,
            5,
            "outside 0..100",
        ),
        (
            "$TargetDedicatedNodes = 1e308 * 10",
            ErrorKind::Domain,
            1,
            1,
            "finite",
        ),
        (
            "x = max($PendingTasks.GetSample(5))",
            ErrorKind::EmptyList,
            1,
            5,
            "max of no values",
        ),
        (
            "x = avg($PendingTasks.GetSample(TimeInterval_Hour))",
            ErrorKind::EmptyList,
            1,
            5,
            "GetSamplePercent",
        ),
        (
            "x = val($PendingTasks.GetSample(5), 0)",
            ErrorKind::IndexOutOfRange,
            1,
            5,
            "outside a vector of 0 values",
        ),
        (
            "x = time(\"yesterday\")",
            ErrorKind::InvalidTime,
            1,
            5,
            "RFC 1123",
        ),
        (
            "x = $PendingTasks.GetSample(TimeInterval_Hour, 10)",
            ErrorKind::InsufficientSampleData,
            1,
            19,
            "$PendingTasks wanted 10%, received 0%",
        ),
        (
            "x = $PendingTasks.HistoryBeginTime()",
            ErrorKind::InsufficientSampleData,
            1,
            19,
            "no samples yet",
        ),
    ];
    let mut wrong = Vec::new();
    for (formula, kind, line, col, words) in rows {
        let e = error_of(formula);
        let short: String = formula.chars().take(60).collect();
        if e.kind != kind
            || (e.pos.line, e.pos.col) != (line, col)
            || !e.to_string().contains(words)
        {
            wrong.push(format!("{short:?}: {:?} {e}", e.kind));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_failed_evaluation_changes_nothing_but_shows_what_it_had() {
    let out = Pool::new("2026-01-05T12:00:00Z")
        .target(4)
        .run("$TargetDedicatedNodes = 9; x = 1 / 0");
    assert_eq!(out.target_nodes(100), None);
    assert_eq!(out.target_dedicated, None);
    assert!(out.results.starts_with("$TargetDedicatedNodes=9"));
}

#[test]
fn the_step_budget_stops_heavy_vector_work() {
    let month: i64 = 30 * 24 * 60;
    let pool = Pool::new("2026-01-05T12:00:00Z").history(month, Metric::CPUPercent, |_| 1.0);
    let mut formula = String::from("v = $CPUPercent.GetSample(TimeInterval_Day * 31);");
    for _ in 0..90 {
        formula.push_str("x = sum(v, v, v, v, v, v, v, v, v, v);");
    }
    let out = pool.run(&formula);
    assert_eq!(out.error.unwrap().kind, ErrorKind::BudgetExceeded);
    assert!(out.steps <= eval::STEPS_MAX + 100_000);
    // A month of samples read once stays well within it.
    let out = pool.run("r = avg($CPUPercent.GetSample(TimeInterval_Day * 31))");
    assert_eq!(value(ok(&out), "r"), "1");
}

// ---- properties ----

fn arb_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (0u32..1000).prop_map(|n| n.to_string()),
        Just("0.5".to_string()),
        Just("$PendingTasks".to_string()),
        Just("$CPUPercent".to_string()),
        Just("$TargetDedicatedNodes".to_string()),
        Just("TimeInterval_Minute".to_string()),
        Just("time()".to_string()),
        Just("\"Mon, 06 Oct 2014 10:20:00 GMT\"".to_string()),
        Just("taskcompletion".to_string()),
        Just("$PendingTasks.GetSample(TimeInterval_Minute * 5)".to_string()),
        Just("$PendingTasks.GetSample(3)".to_string()),
        Just("$ActiveTasks.GetSamplePercent(TimeInterval_Hour)".to_string()),
        Just("a".to_string()),
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        let op = prop_oneof![
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("<"),
            Just("=="),
            Just("&&"),
            Just("||"),
            Just(">=")
        ];
        let func = prop_oneof![
            Just("avg"),
            Just("max"),
            Just("min"),
            Just("sum"),
            Just("len"),
            Just("std"),
            Just("lg"),
            Just("norm"),
            Just("range"),
            Just("time"),
            Just("val"),
            Just("percentile"),
            Just("rand"),
        ];
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(a, o, b)| format!("({a} {o} {b})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("{c} ? {a} : {b}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            inner.clone().prop_map(|a| format!("!({a})")),
            inner.clone().prop_map(|a| format!("({a}).hour")),
            (func, proptest::collection::vec(inner, 0..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
        ]
    })
}

fn arb_formula() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("$TargetDedicatedNodes"),
                Just("$NodeDeallocationOption"),
                Just("$PendingTasks")
            ],
            arb_expr(),
        ),
        1..8,
    )
    .prop_map(|stmts| {
        let mut s = String::from("a = 1;");
        for (lhs, e) in stmts {
            s.push_str(&format!("{lhs} = {e};\n"));
        }
        s
    })
}

fn history_pool() -> Pool {
    Pool::new("2026-01-05T12:00:00Z")
        .set(Metric::PendingTasks, 3.0)
        .history(60, Metric::PendingTasks, |i| (i % 7) as f64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn generated_formulas_never_panic_and_stay_in_budget(formula in arb_formula()) {
        let out = history_pool().run(&formula);
        prop_assert!(out.steps <= eval::STEPS_MAX + 1);
        if out.error.is_none() {
            prop_assert!(out.results.starts_with('$'));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        let out = history_pool().run(&text);
        prop_assert!(out.steps <= eval::STEPS_MAX + 1);
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..13,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        delete in any::<bool>(),
    ) {
        let all = [C01, C02, C03, C04, C05, C06, C07, C08, C09, C10, C11, C12, C13];
        let mut text = all[which].as_bytes().to_vec();
        let i = at.index(text.len());
        if delete { text.remove(i); } else { text[i] = byte; }
        let _ = history_pool().run(&String::from_utf8_lossy(&text));
    }

    #[test]
    fn parse_errors_point_inside_the_text(text in "[ -~\n]{0,200}") {
        if let Err(e) = parse(&text) {
            let lines = text.split('\n').count() as u32;
            prop_assert!(e.pos.line >= 1 && e.pos.line <= lines.max(1));
            prop_assert!(e.pos.col >= 1);
        }
    }
}

#[test]
fn every_published_example_parses_except_the_doc_bug() {
    for (name, text) in ALL {
        match parse(text) {
            Ok(_) => assert_ne!(name, "C04", "C04 lacks a ';' and must be refused"),
            Err(e) => assert_eq!(name, "C04", "{name}: {e}"),
        }
    }
    assert_eq!(longest(), C09);
}
