//! Property test: random command sequences through the real actors and the
//! real log. Live state must equal the state rebuilt from the log, with and
//! without snapshots, and replay must find no mismatch.

mod common;

use std::sync::Arc;

use common::*;
use lote::actors::{load, Core, CoreConfig, CoreError, Registered};
use lote::domain::job::{DisableTasks, Job, JobCommand};
use lote::domain::node::{AgentInfo, Node, NodeCommand};
use lote::domain::pool::{Deallocation, Pool, PoolCommand};
use lote::domain::task::{FailureCategory, Task, TaskCommand, TaskResult};
use lote::store::{StoreOptions, StreamId};
use lote::types::{NodeId, TaskId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Resize(u32),
    AddNode(u8),
    RegisterNode(u8),
    LoseNode(u8),
    AddTask(u8),
    Assign(u8, u8),
    Start(u8),
    Complete(u8, bool),
    Requeue(u8),
    Terminate(u8),
    Delete(u8),
    DisableJob,
    EnableJob,
    TerminateJob,
    CompleteJob,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u32..6).prop_map(Op::Resize),
        1 => (0u8..3).prop_map(Op::AddNode),
        1 => (0u8..3).prop_map(Op::RegisterNode),
        1 => (0u8..3).prop_map(Op::LoseNode),
        4 => (0u8..12).prop_map(Op::AddTask),
        4 => ((0u8..12), (0u8..3)).prop_map(|(t, n)| Op::Assign(t, n)),
        3 => (0u8..12).prop_map(Op::Start),
        4 => ((0u8..12), any::<bool>()).prop_map(|(t, ok)| Op::Complete(t, ok)),
        1 => (0u8..12).prop_map(Op::Requeue),
        1 => (0u8..12).prop_map(Op::Terminate),
        1 => (0u8..12).prop_map(Op::Delete),
        1 => Just(Op::DisableJob),
        1 => Just(Op::EnableJob),
        1 => Just(Op::TerminateJob),
        1 => Just(Op::CompleteJob),
    ]
}

fn node(i: u8) -> NodeId {
    NodeId::new(format!("n{i}")).unwrap()
}

fn task(i: u8) -> TaskId {
    TaskId::new(format!("t{i}")).unwrap()
}

fn ok_or_rejected<T>(r: Result<T, CoreError>) {
    match r {
        Ok(_) | Err(CoreError::Rejected(_)) => {}
        Err(e) => panic!("infrastructure error: {e}"),
    }
}

async fn run_op(core: &Core, op: &Op) {
    let c = core.clock().clone();
    let live = |p| live_ctx(c.as_ref(), p);
    let pool = StreamId::pool(&acme(), &pool_id());
    let job = StreamId::job(&acme(), &job_id());
    let node_stream = |i: u8| StreamId::node(&acme(), &pool_id(), &node(i));
    let task_stream = |i: u8| StreamId::task(&acme(), &job_id(), &task(i));
    let attempt = |i: u8| async move {
        core.state::<Task>(&task_stream(i))
            .await
            .map(|v| v.state.attempt)
            .unwrap_or(0)
    };
    match op {
        Op::Resize(n) => ok_or_rejected(
            core.execute::<Pool>(
                &pool,
                PoolCommand::ResizePool {
                    target_nodes: *n,
                    deallocation: Deallocation::Requeue,
                },
                live(user()),
            )
            .await,
        ),
        Op::AddNode(i) => ok_or_rejected(
            core.execute::<Node>(
                &node_stream(*i),
                NodeCommand::AddNode {
                    account: acme(),
                    pool: pool_id(),
                    node: node(*i),
                    name: format!("tvm{i}"),
                },
                live(system()),
            )
            .await,
        ),
        Op::RegisterNode(i) => {
            let agent_info = AgentInfo {
                hostname: "h".into(),
                address: "127.0.0.1:9".into(),
                cores: 2,
                memory_mib: 1024,
                task_slots: 2,
                agent_version: "t".into(),
            };
            ok_or_rejected(
                core.execute::<Node>(
                    &node_stream(*i),
                    NodeCommand::RegisterAgent {
                        agent: agent_info,
                        has_start_task: false,
                    },
                    live(agent(&format!("n{i}"))),
                )
                .await,
            )
        }
        Op::LoseNode(i) => ok_or_rejected(
            core.execute::<Node>(
                &node_stream(*i),
                NodeCommand::MarkUnusable {
                    reason: "lost".into(),
                },
                live(system()),
            )
            .await,
        ),
        Op::AddTask(i) => ok_or_rejected(
            core.add_task(
                &acme(),
                &job_id(),
                task_spec(&format!("t{i}")),
                live(user()),
            )
            .await,
        ),
        Op::Assign(t, n) => ok_or_rejected(
            core.execute::<Task>(
                &task_stream(*t),
                TaskCommand::AssignTask { node: node(*n) },
                live(system()),
            )
            .await,
        ),
        Op::Start(t) => {
            let a = attempt(*t).await;
            ok_or_rejected(
                core.execute::<Task>(
                    &task_stream(*t),
                    TaskCommand::StartTask { attempt: a },
                    live(system()),
                )
                .await,
            )
        }
        Op::Complete(t, ok) => {
            let a = attempt(*t).await;
            let result = TaskResult {
                exit_code: Some(if *ok { 0 } else { 1 }),
                signal: None,
                duration_ms: 3,
                failure: (!ok).then(|| (FailureCategory::NonZeroExit, "exit 1".to_string())),
            };
            ok_or_rejected(
                core.execute::<Task>(
                    &task_stream(*t),
                    TaskCommand::CompleteTask {
                        attempt: a,
                        result,
                        outputs: vec![],
                    },
                    live(system()),
                )
                .await,
            )
        }
        Op::Requeue(t) => {
            let a = attempt(*t).await;
            ok_or_rejected(
                core.execute::<Task>(
                    &task_stream(*t),
                    TaskCommand::RequeueTask {
                        attempt: a,
                        reason: "node lost".into(),
                    },
                    live(system()),
                )
                .await,
            )
        }
        Op::Terminate(t) => ok_or_rejected(
            core.execute::<Task>(
                &task_stream(*t),
                TaskCommand::TerminateTask {
                    reason: "user".into(),
                },
                live(user()),
            )
            .await,
        ),
        Op::Delete(t) => ok_or_rejected(
            core.execute::<Task>(&task_stream(*t), TaskCommand::DeleteTask, live(user()))
                .await,
        ),
        Op::DisableJob => ok_or_rejected(
            core.execute::<Job>(
                &job,
                JobCommand::DisableJob {
                    disable_tasks: DisableTasks::Wait,
                },
                live(user()),
            )
            .await,
        ),
        Op::EnableJob => ok_or_rejected(
            core.execute::<Job>(&job, JobCommand::EnableJob, live(user()))
                .await,
        ),
        Op::TerminateJob => ok_or_rejected(
            core.execute::<Job>(
                &job,
                JobCommand::TerminateJob {
                    reason: "user".into(),
                },
                live(user()),
            )
            .await,
        ),
        Op::CompleteJob => ok_or_rejected(
            core.execute::<Job>(
                &job,
                JobCommand::CompleteJob {
                    reason: "drained".into(),
                },
                live(system()),
            )
            .await,
        ),
    }
}

async fn check_stream<A: Registered>(core: &Core, stream: &StreamId) {
    let live = core.state::<A>(stream).await.unwrap();
    live.state
        .sanity_check()
        .unwrap_or_else(|e| panic!("{stream}: {e}"));
    let from_log = load::<A>(core.store(), stream, false).unwrap();
    let from_snapshot = load::<A>(core.store(), stream, true).unwrap();
    assert_eq!(live, from_log, "{stream}: live state differs from the log");
    assert_eq!(
        from_snapshot, from_log,
        "{stream}: snapshot-based state differs from the log"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn live_state_equals_rebuilt_state(ops in proptest::collection::vec(op(), 1..80), snapshot_every in 1u64..5) {
        actix::System::new().block_on(async move {
            let (_dir, store) = temp_store(StoreOptions::default());
            let clock = Arc::new(clock());
            let config = CoreConfig { snapshot_every, idle_passivate: std::time::Duration::from_secs(60) };
            let core = Core::new(store.clone(), clock.clone(), config);
            let c = clock.as_ref();
            core.execute::<lote::domain::account::Account>(&account_stream(), create_account_cmd(), live_ctx(c, lote::types::Principal::Admin)).await.unwrap();
            core.execute::<Pool>(&StreamId::pool(&acme(), &pool_id()), PoolCommand::CreatePool { spec: pool_spec(2) }, live_ctx(c, user())).await.unwrap();
            core.execute::<Job>(&StreamId::job(&acme(), &job_id()), JobCommand::CreateJob { spec: job_spec() }, live_ctx(c, user())).await.unwrap();
            for op in &ops {
                run_op(&core, op).await;
            }
            check_stream::<Pool>(&core, &StreamId::pool(&acme(), &pool_id())).await;
            check_stream::<Job>(&core, &StreamId::job(&acme(), &job_id())).await;
            for i in 0..3 {
                check_stream::<Node>(&core, &StreamId::node(&acme(), &pool_id(), &node(i))).await;
            }
            for i in 0..12 {
                check_stream::<Task>(&core, &StreamId::task(&acme(), &job_id(), &task(i))).await;
            }
            let report = lote::replay::replay(&store).unwrap();
            assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
            // Deleting every snapshot changes nothing.
            let job_before = load::<Job>(&store, &StreamId::job(&acme(), &job_id()), true).unwrap();
            store.delete_all_snapshots().unwrap();
            assert_eq!(load::<Job>(&store, &StreamId::job(&acme(), &job_id()), true).unwrap(), job_before);
        });
    }
}
