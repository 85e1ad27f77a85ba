//! Properties: any formula parses or fails cleanly, evaluation is bounded.

use super::*;

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
