//! Every construct of the language, one row each, and evaluation rules.

use super::*;

// ---- constructs, one row each: formula, the value of `r` it leaves ----

#[test]
fn construct_table() {
    let rows: &[(&str, &str)] = &[
        ("r = 1 + 2 * 3", "7"),
        // Runs of operators fold left to right, as a left-deep tree would.
        ("r = 10 - 2 - 3", "5"),
        ("r = 100 / 10 / 2", "5"),
        ("r = 1 * 2 + 3 * 4 - 5 / 5", "13"),
        ("r = 2 < 3 == 1", "1"),
        ("r = 0 || 0 || 1 || 1 / 0", "1"),
        ("r = 1 && 1 && 0 && 1 / 0", "0"),
        ("r = 1 || 0 && 1 / 0", "1"),
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

#[test]
fn a_formula_file_may_start_with_a_byte_order_mark() {
    let f = parse("\u{feff}$TargetDedicatedNodes = 3;").expect("parses");
    let plain = parse("$TargetDedicatedNodes = 3;").expect("parses");
    assert_eq!(f, plain);
    // Anywhere else it is an unexpected character.
    assert!(parse("$TargetDedicatedNodes = \u{feff}3;").is_err());
}
