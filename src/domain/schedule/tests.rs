//! Given a schedule's events, when time passes (or a command comes), then
//! this decision or these events: the timing rules with no clock but the
//! one each test names.

use super::*;
use crate::domain::job::JobSpec;
use crate::types::{PoolId, Principal};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_micros(secs * 1_000_000)
}

fn at(text: &str) -> Timestamp {
    Timestamp::from_datetime(
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&chrono::Utc),
    )
}

fn spec(recurrence: Recurrence) -> ScheduleSpec {
    let acme = AccountName::new("acme").unwrap();
    let id = JobId::new("nightly").unwrap();
    ScheduleSpec {
        id: id.clone(),
        account: acme.clone(),
        display_name: String::new(),
        recurrence,
        not_before: Some(t(1000)),
        not_after: None,
        start_window_secs: None,
        overlap: Overlap::Wait,
        job: JobSpec::on_pool(id, acme, PoolId::new("p").unwrap()),
        tasks: vec![],
    }
}

fn created(spec: ScheduleSpec) -> Schedule {
    let mut s = Schedule::default();
    s.apply(&ScheduleEvent::ScheduleCreated { spec, at: t(0) });
    s
}

fn started(s: &mut Schedule, run: u64, due: Timestamp) {
    s.apply(&ScheduleEvent::ScheduleRunStarted {
        run,
        job: job_id(&JobId::new("nightly").unwrap(), run),
        due: Some(due),
        at: due,
    });
}

fn ctx(now: Timestamp) -> Ctx {
    Ctx {
        now,
        principal: Principal::Account {
            account: AccountName::new("acme").unwrap(),
        },
        request_id: crate::types::RequestId(uuid::Uuid::nil()),
        fresh: [uuid::Uuid::nil(); 4],
    }
}

#[test]
fn a_fixed_interval_runs_from_its_anchor_and_waits_for_the_active_job() {
    let mut s = created(spec(Recurrence::Every { secs: 60 }));
    assert_eq!(s.next_due, Some(t(1000)));
    assert_eq!(s.due_at(t(999)), Due::Nothing);
    assert_eq!(
        s.due_at(t(1000)),
        Due::Start {
            run: 1,
            due: t(1000),
            replace: false
        }
    );
    started(&mut s, 1, t(1000));
    assert_eq!(s.next_due, Some(t(1060)));
    // Due while run 1's job is active: wait (Azure's one active job).
    assert_eq!(s.due_at(t(1061)), Due::Nothing);
    // The run after is due too: run 2 is skipped, run 3 may still start.
    assert_eq!(
        s.due_at(t(1125)),
        Due::Skip {
            first: 2,
            count: 1,
            due: t(1060),
            reason: SkipReason::PreviousJobActive
        }
    );
    s.apply(&ScheduleEvent::ScheduleRunsSkipped {
        first: 2,
        count: 1,
        due: t(1060),
        reason: SkipReason::PreviousJobActive,
        at: t(1125),
    });
    assert_eq!((s.next_run, s.next_due), (3, Some(t(1120))));
    s.apply(&ScheduleEvent::ScheduleRunEnded {
        run: 1,
        at: t(1126),
    });
    assert_eq!(
        s.due_at(t(1126)),
        Due::Start {
            run: 3,
            due: t(1120),
            replace: false
        }
    );
    assert_eq!(s.skipped_previous_active, 1);
}

#[test]
fn overlap_policies_skip_replace_or_allow() {
    for (overlap, expected) in [
        (
            Overlap::Skip,
            Due::Skip {
                first: 2,
                count: 1,
                due: t(1060),
                reason: SkipReason::PreviousJobActive,
            },
        ),
        (
            Overlap::Replace,
            Due::Start {
                run: 2,
                due: t(1060),
                replace: true,
            },
        ),
        (
            Overlap::Allow,
            Due::Start {
                run: 2,
                due: t(1060),
                replace: false,
            },
        ),
        (Overlap::Wait, Due::Nothing),
    ] {
        let mut s = created(ScheduleSpec {
            overlap,
            ..spec(Recurrence::Every { secs: 60 })
        });
        started(&mut s, 1, t(1000));
        assert_eq!(s.due_at(t(1061)), expected, "{overlap:?}");
    }
}

#[test]
fn a_server_down_through_many_runs_starts_one_catch_up_and_records_the_rest_missed() {
    let mut s = created(ScheduleSpec {
        start_window_secs: Some(30),
        ..spec(Recurrence::Every { secs: 60 })
    });
    // Down from before t=1000 until t=1310: runs due at 1000..=1300.
    let decision = s.due_at(t(1310));
    assert_eq!(
        decision,
        Due::Skip {
            first: 1,
            count: 5,
            due: t(1240),
            reason: SkipReason::StartWindowPassed
        }
    );
    s.apply(&ScheduleEvent::ScheduleRunsSkipped {
        first: 1,
        count: 5,
        due: t(1240),
        reason: SkipReason::StartWindowPassed,
        at: t(1310),
    });
    // The latest, due at 1300, is within its window: it starts.
    assert_eq!(
        s.due_at(t(1310)),
        Due::Start {
            run: 6,
            due: t(1300),
            replace: false
        }
    );
    // Had it been more than 30 s late, it would be missed too.
    assert_eq!(
        s.due_at(t(1331)),
        Due::Skip {
            first: 6,
            count: 1,
            due: t(1300),
            reason: SkipReason::StartWindowPassed
        }
    );
    assert_eq!(s.missed_start_window, 5);
}

#[test]
fn a_disabled_schedule_skips_its_runs_and_a_one_shot_completes_after_its_job() {
    let mut s = created(spec(Recurrence::Every { secs: 60 }));
    s.apply(&ScheduleEvent::ScheduleDisabled { at: t(10) });
    assert_eq!(
        s.due_at(t(1001)),
        Due::Skip {
            first: 1,
            count: 1,
            due: t(1000),
            reason: SkipReason::Disabled
        }
    );

    let mut once = created(spec(Recurrence::Once));
    assert!(matches!(once.due_at(t(1000)), Due::Start { run: 1, .. }));
    started(&mut once, 1, t(1000));
    assert_eq!(once.next_due, None);
    assert_eq!(once.due_at(t(5000)), Due::Nothing, "its job is active");
    once.apply(&ScheduleEvent::ScheduleRunEnded {
        run: 1,
        at: t(5000),
    });
    assert_eq!(once.due_at(t(5000)), Due::Complete);
}

#[test]
fn an_update_times_the_runs_to_come_from_the_update_in_step_with_the_anchor() {
    let mut s = created(spec(Recurrence::Every { secs: 60 }));
    started(&mut s, 1, t(1000));
    // Updated at 1250 to every 100 s from the same anchor (1000): the
    // next run is at 1300, not at the anchor with runs missed since.
    s.apply(&ScheduleEvent::ScheduleUpdated {
        spec: spec(Recurrence::Every { secs: 100 }),
        at: t(1250),
    });
    assert_eq!(s.next_due, Some(t(1300)));
    // A future anchor stays the first due time.
    let later = ScheduleSpec {
        not_before: Some(t(5000)),
        ..spec(Recurrence::Every { secs: 100 })
    };
    assert_eq!(later.due_at_or_after(t(1250)), Some(t(5000)));
    assert_eq!(later.due_at_or_after(t(5000)), Some(t(5000)));
    assert_eq!(later.due_at_or_after(t(5001)), Some(t(5100)));
}

#[test]
fn not_after_ends_the_runs() {
    let s = created(ScheduleSpec {
        not_after: Some(t(1100)),
        ..spec(Recurrence::Every { secs: 60 })
    });
    let spec = s.spec.clone().unwrap();
    assert_eq!(spec.next_due(t(1000)), Some(t(1060)));
    assert_eq!(spec.next_due(t(1060)), None);
}

#[test]
fn cron_in_a_time_zone_across_daylight_saving_changes() {
    // Madrid: 2026-03-29 at 02:00 the clocks jump to 03:00; 2026-10-25
    // at 03:00 they go back to 02:00.
    let daily = |expr: &str| ScheduleSpec {
        not_before: None,
        ..spec(Recurrence::Cron {
            expression: expr.into(),
            time_zone: "Europe/Madrid".into(),
        })
    };
    // 09:00 local is 08:00 UTC in winter, 07:00 UTC in summer.
    let nine = daily("0 9 * * *");
    assert_eq!(
        nine.next_due(at("2026-03-28T08:00:00Z")),
        Some(at("2026-03-29T07:00:00Z"))
    );
    // 02:30 does not exist on the spring-forward day: that run is at the
    // first time after the gap (03:00 local, 01:00 UTC), once.
    let half_two = daily("30 2 * * *");
    let spring = half_two.next_due(at("2026-03-28T01:30:00Z")).unwrap();
    assert_eq!(spring, at("2026-03-29T01:00:00Z"));
    assert_eq!(half_two.next_due(spring), Some(at("2026-03-30T00:30:00Z")));
    // 02:30 happens twice on the fall-back day: it runs at the first
    // (00:30 UTC), not again at the second (01:30 UTC).
    let fall = half_two.next_due(at("2026-10-24T00:30:00Z")).unwrap();
    assert_eq!(fall, at("2026-10-25T00:30:00Z"));
    assert_eq!(half_two.next_due(fall), Some(at("2026-10-26T01:30:00Z")));
}

#[test]
fn bad_specs_are_refused_with_what_is_wrong() {
    let bad = |s: ScheduleSpec| s.validate(60).unwrap_err().detail;
    assert!(bad(spec(Recurrence::Every { secs: 5 })).contains("at least 60s"));
    assert!(bad(spec(Recurrence::Cron {
        expression: "0 9 * *".into(),
        time_zone: "UTC".into()
    }))
    .contains("5 fields"));
    assert!(bad(spec(Recurrence::Cron {
        expression: "0 9 * * *".into(),
        time_zone: "Mars/Olympus".into()
    }))
    .contains("IANA"));
    assert!(bad(ScheduleSpec {
        not_after: Some(t(10)),
        ..spec(Recurrence::Once)
    })
    .contains("not_after"));
    assert!(spec(Recurrence::Every { secs: 5 }).validate(5).is_ok());
}

#[test]
fn commands_keep_the_run_numbers_in_order_and_the_states_apart() {
    let mut s = created(spec(Recurrence::Every { secs: 60 }));
    let refused = s
        .decide(
            &ScheduleCommand::StartRun {
                run: 2,
                due: Some(t(1000)),
            },
            &ctx(t(1000)),
        )
        .unwrap_err();
    assert_eq!(refused.code, RejectionCode::ScheduleStateConflict);
    let events = s
        .decide(
            &ScheduleCommand::StartRun {
                run: 1,
                due: Some(t(1000)),
            },
            &ctx(t(1000)),
        )
        .unwrap();
    for e in &events {
        s.apply(e);
    }
    assert_eq!(s.active.len(), 1);
    assert_eq!(s.active[0].job.as_str(), "nightly-job-1");
    // Run by hand: takes the next number, leaves the recurrence's time.
    let due_before = s.next_due;
    let events = s
        .decide(
            &ScheduleCommand::StartRun { run: 2, due: None },
            &ctx(t(1010)),
        )
        .unwrap();
    for e in &events {
        s.apply(e);
    }
    assert_eq!((s.next_run, s.next_due), (3, due_before));
    assert!(s.decide(&ScheduleCommand::Enable, &ctx(t(1))).is_err());
    for e in s
        .decide(&ScheduleCommand::Terminate, &ctx(t(1020)))
        .unwrap()
    {
        s.apply(&e);
    }
    assert_eq!(s.status, ScheduleStatus::Terminating);
    assert!(s
        .decide(
            &ScheduleCommand::StartRun { run: 3, due: None },
            &ctx(t(1030))
        )
        .is_err());
    assert!(
        s.decide(&ScheduleCommand::Complete, &ctx(t(1030))).is_err(),
        "jobs active"
    );
}
