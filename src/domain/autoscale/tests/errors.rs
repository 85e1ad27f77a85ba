//! Every error, one row each: formula, kind, line, column, words.

use super::*;

// ---- errors, one row each: formula, kind, line, column, words ----

#[test]
fn error_table() {
    let long = format!("x = 1;{}", " ".repeat(8 * 1024));
    let many = "x = 1;".repeat(101);
    let deep_parens = format!("x = {}1{}", "(".repeat(200), ")".repeat(200));
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

/// A flat run of operators is not nesting: a sum of 300 terms (or one as
/// long as a formula may be) evaluates, where nesting 65 deep is refused.
#[test]
fn a_long_flat_chain_is_not_nesting() {
    let pool = Pool::new("2026-01-05T12:00:00Z");
    let sum = format!("x = 1{}", " + 1".repeat(300));
    assert_eq!(value(ok(&pool.run(&sum)), "x"), "301");
    let mixed = format!("x = 0{}", " + 2 - 1".repeat(1000));
    assert_eq!(value(ok(&pool.run(&mixed)), "x"), "1000");
    let nested = format!("x = {}1{}", "(1 + ".repeat(65), ")".repeat(65));
    assert_eq!(error_of(&nested).kind, ErrorKind::TooDeep);
}
