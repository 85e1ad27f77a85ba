//! The actor layer: activation, passivation, restart, cross-entity appends.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lote::actors::{load, Core, CoreConfig, CoreError};
use lote::domain::account::Account;
use lote::domain::job::{Job, JobCommand};
use lote::domain::pool::{Pool, PoolCommand};
use lote::domain::task::{Task, TaskBucket, TaskCommand, TaskResult, TaskStatus};
use lote::domain::RejectionCode;
use lote::store::{EventStore, StoreOptions, StreamId};
use lote::types::{NodeId, Principal, TaskId};

fn config(idle_ms: u64) -> CoreConfig {
    CoreConfig {
        snapshot_every: 10,
        idle_passivate: Duration::from_millis(idle_ms),
    }
}

async fn setup(core: &Core) {
    let c = core.clock().clone();
    core.execute::<Account>(
        &account_stream(),
        create_account_cmd(),
        live_ctx(c.as_ref(), Principal::Admin),
    )
    .await
    .unwrap();
    core.execute::<Pool>(
        &StreamId::pool(&acme(), &pool_id()),
        PoolCommand::CreatePool { spec: pool_spec(1) },
        live_ctx(c.as_ref(), user()),
    )
    .await
    .unwrap();
    core.execute::<Job>(
        &StreamId::job(&acme(), &job_id()),
        JobCommand::CreateJob { spec: job_spec() },
        live_ctx(c.as_ref(), user()),
    )
    .await
    .unwrap();
}

/// The job's state, from its actor.
async fn job_state(core: &Core) -> lote::domain::Versioned<Job> {
    core.state::<Job>(&StreamId::job(&acme(), &job_id()))
        .await
        .unwrap()
}

async fn run_task_to_completion(core: &Core, i: u32) {
    let c = core.clock().clone();
    let id = TaskId::new(format!("t{i}")).unwrap();
    core.add_task(
        &acme(),
        &job_id(),
        task_spec(id.as_str()),
        live_ctx(c.as_ref(), user()),
    )
    .await
    .unwrap();
    let stream = StreamId::task(&acme(), &job_id(), &id);
    core.execute::<Task>(
        &stream,
        TaskCommand::AssignTask {
            node: NodeId::new("n0").unwrap(),
        },
        live_ctx(c.as_ref(), system()),
    )
    .await
    .unwrap();
    core.execute::<Task>(
        &stream,
        TaskCommand::StartTask { attempt: 1 },
        live_ctx(c.as_ref(), agent("n0")),
    )
    .await
    .unwrap();
    let result = TaskResult {
        exit_code: Some(0),
        signal: None,
        duration_ms: 1,
        failure: None,
    };
    let done = core
        .execute::<Task>(
            &stream,
            TaskCommand::CompleteTask {
                attempt: 1,
                result,
                outputs: vec![],
            },
            live_ctx(c.as_ref(), agent("n0")),
        )
        .await
        .unwrap();
    assert_eq!(done.state.status, TaskStatus::Completed);
}

#[actix::test]
async fn finished_tasks_hold_no_actor_and_idle_actors_stop() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let core = Core::new(store, Arc::new(clock()), config(300));
    setup(&core).await;
    for i in 0..50 {
        run_task_to_completion(&core, i).await;
    }
    // Give the stopped actors' mailboxes a moment to close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        core.actor_counts().tasks,
        0,
        "completed tasks must be passivated at once"
    );
    assert!(core.actor_counts().jobs >= 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let counts = core.actor_counts();
    assert_eq!(
        (counts.accounts, counts.pools, counts.jobs),
        (0, 0, 0),
        "idle actors must stop: {counts:?}"
    );
    // A passivated entity comes back from its snapshot and later events.
    let job = job_state(&core).await;
    assert_eq!(job.state.count(TaskBucket::Succeeded), 50);
    assert!(
        core.store()
            .load_snapshot(&StreamId::job(&acme(), &job_id()))
            .unwrap()
            .is_some(),
        "a busy job gets snapshots"
    );
    assert_eq!(
        job,
        load::<Job>(core.store(), &StreamId::job(&acme(), &job_id()), false).unwrap()
    );
}

#[test]
fn state_survives_a_restart_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store =
            EventStore::open(dir.path(), StoreOptions::default(), Arc::new(clock())).unwrap();
        let core = Core::new(store, Arc::new(clock()), config(60_000));
        actix::System::new().block_on(async move {
            setup(&core).await;
            for i in 0..5 {
                run_task_to_completion(&core, i).await;
            }
            job_state(&core).await
        })
    };
    let store = EventStore::open(dir.path(), StoreOptions::default(), Arc::new(clock())).unwrap();
    let core = Core::new(store, Arc::new(clock()), config(60_000));
    let after = actix::System::new().block_on(async move {
        // The task ids already exist after the restart.
        let again = core
            .add_task(
                &acme(),
                &job_id(),
                task_spec("t0"),
                live_ctx(&clock(), user()),
            )
            .await
            .unwrap_err();
        assert_eq!(again.rejection_code(), Some(RejectionCode::TaskExists));
        job_state(&core).await
    });
    assert_eq!(before, after);
    assert_eq!(after.state.count(TaskBucket::Succeeded), 5);
}

#[actix::test]
async fn concurrent_task_updates_of_one_job_never_conflict() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let core = Core::new(store.clone(), Arc::new(clock()), config(60_000));
    setup(&core).await;
    let mut handles = Vec::new();
    for i in 0..40 {
        let core = core.clone();
        handles.push(actix::spawn(async move {
            run_task_to_completion(&core, i).await
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let job = job_state(&core).await.state;
    assert_eq!(job.count(TaskBucket::Succeeded), 40);
    assert_eq!(job.unfinished(), 0);
    assert_eq!(lote::replay::replay(&store).unwrap().mismatches, vec![]);
}

#[actix::test]
async fn commands_to_the_wrong_kind_or_account_are_refused() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let core = Core::new(store, Arc::new(clock()), config(60_000));
    setup(&core).await;
    let err = core
        .execute::<Job>(
            &account_stream(),
            JobCommand::EnableJob,
            live_ctx(&clock(), user()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.rejection_code(), Some(RejectionCode::InvalidValue));
    let other = Principal::Account {
        account: lote::types::AccountName::new("other").unwrap(),
    };
    let err = core
        .execute::<Job>(
            &StreamId::job(&acme(), &job_id()),
            JobCommand::DisableJob {
                disable_tasks: Default::default(),
            },
            live_ctx(&clock(), other.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.rejection_code(),
        Some(RejectionCode::JobNotFound),
        "another account's job must look absent"
    );
    let err = core
        .add_task(
            &acme(),
            &job_id(),
            task_spec("x"),
            live_ctx(&clock(), other),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Rejected(ref r) if r.code == RejectionCode::JobNotFound),
        "{err}"
    );
}

fn task_stream(id: &str) -> StreamId {
    StreamId::task(&acme(), &job_id(), &TaskId::new(id).unwrap())
}

fn assign_to_n0(id: &str) -> (StreamId, TaskCommand) {
    let node = NodeId::new("n0").unwrap();
    (task_stream(id), TaskCommand::AssignTask { node })
}

fn succeeded(attempt: u32) -> TaskCommand {
    let result = TaskResult {
        exit_code: Some(0),
        signal: None,
        duration_ms: 1,
        failure: None,
    };
    TaskCommand::CompleteTask {
        attempt,
        result,
        outputs: vec![],
    }
}

async fn add_tasks(core: &Core, ids: &[&str]) {
    for id in ids {
        let ctx = live_ctx(core.clock().as_ref(), user());
        core.add_task(&acme(), &job_id(), task_spec(id), ctx)
            .await
            .unwrap();
    }
}

/// Requeues task `id`, assigned once (version 2), as a writer with no
/// actor and no batch would: one event appended straight to the log.
async fn requeue_assigned(core: &Core, store: &EventStore, id: &str) {
    let requeued = lote::domain::task::TaskEvent::TaskRequeued {
        attempt: 1,
        reason: "test".into(),
        at: core.clock().now(),
    };
    let append = lote::store::StreamAppend {
        stream: task_stream(id),
        expected: lote::store::ExpectedVersion::Exact(2),
        events: vec![lote::domain::to_new_event(&requeued).unwrap()],
    };
    let causation = live_ctx(core.clock().as_ref(), system()).causation();
    store.append(vec![append], causation).await.unwrap();
}

#[actix::test]
async fn a_batch_answers_each_command_alone_and_appends_once() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let core = Core::new(store.clone(), Arc::new(clock()), config(60_000));
    setup(&core).await;
    add_tasks(&core, &["t0", "t1", "t3"]).await;
    let appends = store.stats().appends;
    let ctx = live_ctx(core.clock().as_ref(), system());
    // t1 twice (the second is refused: assigned already), t9 never added.
    let batch = ["t0", "t1", "t1", "t9", "t3"].map(assign_to_n0).to_vec();
    let outcomes = core.execute_batch::<Task>(batch, ctx).await;
    let codes: Vec<_> = outcomes
        .iter()
        .map(|o| o.as_ref().err().and_then(|e| e.rejection_code()))
        .collect();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok() && outcomes[4].is_ok());
    assert!(codes[2].is_some() && codes[3].is_some(), "{codes:?}");
    assert_eq!(
        store.stats().appends - appends,
        1,
        "three assignments in one append, the refusals in none"
    );
    for id in ["t0", "t1", "t3"] {
        let task = load::<Task>(&store, &task_stream(id), true).unwrap();
        assert_eq!((task.version, task.state.status), (2, TaskStatus::Assigned));
        assert_eq!(task.state.attempt, 1);
    }
    let job = job_state(&core).await;
    assert_eq!(job.state.count(TaskBucket::Running), 3);
    assert_eq!(job.state.count(TaskBucket::Active), 0);
    // Their ends, batched too: no task actor was ever started for them.
    let ctx = live_ctx(core.clock().as_ref(), agent("n0"));
    let ends = ["t0", "t1", "t3"].map(|id| (task_stream(id), succeeded(1)));
    let outcomes = core.execute_batch::<Task>(ends.to_vec(), ctx).await;
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert_eq!(core.actor_counts().tasks, 0);
    let job = job_state(&core).await;
    assert_eq!(job.state.count(TaskBucket::Succeeded), 3);
}

#[actix::test]
async fn tasks_just_added_are_assigned_and_completed_without_reading_their_streams() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let core = Core::new(store.clone(), Arc::new(clock()), config(60_000));
    setup(&core).await;
    add_tasks(&core, &["t0", "t1", "t2"]).await;
    let reads = store.stats().stream_reads;
    let ctx = live_ctx(core.clock().as_ref(), system());
    let batch = ["t0", "t1", "t2"].map(assign_to_n0).to_vec();
    let outcomes = core.execute_batch::<Task>(batch, ctx).await;
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert_eq!(
        store.stats().stream_reads,
        reads,
        "the adds' states were kept for the assignments"
    );
    let ctx = live_ctx(core.clock().as_ref(), agent("n0"));
    let ends = ["t0", "t1", "t2"].map(|id| (task_stream(id), succeeded(1)));
    let outcomes = core.execute_batch::<Task>(ends.to_vec(), ctx).await;
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert_eq!(store.stats().stream_reads, reads);
    // A task the batch never saw is read, once.
    let ctx = live_ctx(core.clock().as_ref(), system());
    let outcomes = core
        .execute_batch::<Task>(vec![assign_to_n0("t9")], ctx)
        .await;
    assert!(outcomes[0].is_err());
    assert_eq!(store.stats().stream_reads, reads + 1);
}

#[actix::test]
async fn a_batch_reads_the_streams_it_kept_nothing_of_together_and_decides_each_right() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let core = Core::new(store.clone(), Arc::new(clock()), config(60_000));
    setup(&core).await;
    add_tasks(&core, &["t0", "t1", "again", "t2"]).await;
    // `again` ran once and was requeued: its stream is three events long.
    let ctx = live_ctx(core.clock().as_ref(), system());
    let first = core
        .execute_batch::<Task>(vec![assign_to_n0("again")], ctx)
        .await;
    assert!(first[0].is_ok(), "{first:?}");
    requeue_assigned(&core, &store, "again").await;
    // A restarted server keeps no state of any of them.
    let core = Core::new(store.clone(), Arc::new(clock()), config(60_000));
    let reads = store.stats().stream_reads;
    let ctx = live_ctx(core.clock().as_ref(), system());
    let batch = ["t0", "again", "t9", "t1", "t2"].map(assign_to_n0).to_vec();
    let outcomes = core.execute_batch::<Task>(batch, ctx).await;
    let refused = outcomes[2].as_ref().err().and_then(|e| e.rejection_code());
    assert!(refused.is_some(), "t9 was never added: {:?}", outcomes[2]);
    for (i, attempt) in [(0, 1), (1, 2), (3, 1), (4, 1)] {
        let state = &outcomes[i].as_ref().unwrap().state;
        assert_eq!(
            (state.status, state.attempt),
            (TaskStatus::Assigned, attempt)
        );
    }
    assert_eq!(
        store.stats().stream_reads - reads,
        6,
        "each stream once in the batched read, and `again` (longer) once more alone"
    );
    let again = load::<Task>(&store, &task_stream("again"), true).unwrap();
    assert_eq!((again.version, again.state.attempt), (4, 2));
    assert_eq!(core.actor_counts().tasks, 0, "no actor was started");
}

#[actix::test]
async fn a_batch_never_decides_on_a_state_another_writer_changed() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let core = Core::new(store.clone(), Arc::new(clock()), config(60_000));
    setup(&core).await;
    add_tasks(&core, &["a", "b"]).await;
    let ctx = live_ctx(core.clock().as_ref(), system());
    let batch = vec![assign_to_n0("a"), assign_to_n0("b")];
    assert!(core
        .execute_batch::<Task>(batch, ctx)
        .await
        .iter()
        .all(|o| o.is_ok()));
    // Another writer (no actor, no batch) requeues `a` behind the batch's
    // back; the batch kept `a`'s state as it left it.
    requeue_assigned(&core, &store, "a").await;
    let conflicts = store.stats().conflicts;
    // Attempt 1 of `a` is over: its end is refused from the stream as the
    // log has it, and `b`'s, in the same batch, recorded.
    let ctx = live_ctx(core.clock().as_ref(), agent("n0"));
    let ends = vec![
        (task_stream("a"), succeeded(1)),
        (task_stream("b"), succeeded(1)),
    ];
    let outcomes = core.execute_batch::<Task>(ends, ctx).await;
    let refused = outcomes[0].as_ref().err().and_then(|e| e.rejection_code());
    assert_eq!(refused, Some(RejectionCode::StaleAttempt));
    assert_eq!(
        outcomes[1].as_ref().unwrap().state.status,
        TaskStatus::Completed
    );
    assert_eq!(
        store.stats().conflicts,
        conflicts,
        "the kept state of `a` was taken for current: its append conflicted"
    );
    let a = load::<Task>(&store, &task_stream("a"), true).unwrap();
    assert_eq!((a.version, a.state.status), (3, TaskStatus::Active));
}

#[actix::test]
async fn a_batch_larger_than_one_append_holds_is_appended_in_parts() {
    let (_dir, store) = temp_store(StoreOptions::default());
    let core = Core::new(store.clone(), Arc::new(clock()), config(60_000));
    setup(&core).await;
    // Three events per assignment with its job's count: 6,000 of them are
    // more than one append's 10,000 events.
    let ids: Vec<String> = (0..6_000).map(|i| format!("t{i}")).collect();
    for part in ids.chunks(2_000) {
        let specs = part.iter().map(|id| task_spec(id)).collect();
        let ctx = live_ctx(core.clock().as_ref(), user());
        core.add_tasks(&acme(), &job_id(), specs, ctx, vec![])
            .await
            .unwrap();
    }
    let ctx = live_ctx(core.clock().as_ref(), system());
    let batch = ids.iter().map(|id| assign_to_n0(id)).collect();
    let outcomes = core.execute_batch::<Task>(batch, ctx).await;
    let refused: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        refused.is_empty(),
        "{} refused: {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(
        core.actor_counts().tasks,
        0,
        "appended as batches, not by actors"
    );
    let job = job_state(&core).await;
    assert_eq!(job.state.count(TaskBucket::Running), 6_000);
}
