//! Microsoft's published formulas, each evaluated on a pool's figures.

use super::*;

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
