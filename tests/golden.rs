//! Golden logs: a recorded log per released event-schema version, with the
//! state every entity must rebuild to. A change that breaks reading old
//! logs (codec, layouts, upcasters, `apply`) fails here.
//!
//! `replay/vN/log.bin` is an export (see `src/golden.rs`), `expected.json`
//! maps each entity to its rebuilt state. A recorded folder is never
//! re-recorded: a new layout gets a new `replay/vN`; new event types in the
//! same layout get a new minor folder `replay/vN.M` (see [`LATEST`]). To
//! record the latest folder when it is missing:
//! `LOTE_RECORD_GOLDEN=1 cargo test --test golden`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use lote::actors::{Core, CoreConfig};
use lote::domain::account::{Account, AccountCommand, KeyKind};
use lote::domain::job::{DisableTasks, Job, JobCommand, WaitReason};
use lote::domain::node::{AgentInfo, Node, NodeCommand};
use lote::domain::pool::{
    AutoscaleRun, AutoscaleRunError, Deallocation, Pool, PoolCommand, PoolSample,
};
use lote::domain::task::{FailureCategory, Task, TaskCommand, TaskResult};
use lote::domain::upcast::{newest_layout, CURRENT_EVENT_SCHEMA};
use lote::replay::AnyState;
use lote::store::{EventStore, StoreOptions, StreamId};
use lote::types::{AccountName, NodeId, Principal, TaskId};

fn golden_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("replay")
}

/// Every event type, per kind: the golden log of the current version must
/// hold each at least once.
const EVENT_TYPES: &[&str] = &[
    "AccountCreated",
    "AccountKeyRegenerated",
    "AccountDisabled",
    "AccountEnabled",
    "AccountDeleted",
    "PoolCreated",
    "PoolResized",
    "PoolResizeStopped",
    "PoolResizeCompleted",
    "PoolAutoscaleEnabled",
    "PoolAutoscaleDisabled",
    "PoolDeleting",
    "PoolDeleted",
    "PoolSampled",
    "PoolAutoscaleEvaluated",
    "PoolUpdated",
    "PoolJoinTokenRotated",
    "PoolSecretSet",
    "PoolSecretRemoved",
    "ScheduleCreated",
    "ScheduleUpdated",
    "ScheduleDisabled",
    "ScheduleEnabled",
    "ScheduleTerminating",
    "ScheduleCompleted",
    "ScheduleDeleting",
    "ScheduleDeleted",
    "ScheduleRunStarted",
    "ScheduleRunsSkipped",
    "ScheduleRunEnded",
    "NodeCreating",
    "NodeStarting",
    "NodeWaitingForStartTask",
    "NodeStartTaskFailed",
    "NodeIdle",
    "NodeRunning",
    "NodeOffline",
    "NodeOnline",
    "NodeUnusable",
    "NodeRebooting",
    "NodeReimaging",
    "NodeLeavingPool",
    "NodeRemoved",
    "JobCreated",
    "JobDisabled",
    "JobEnabled",
    "JobTerminating",
    "JobCompleted",
    "JobDeleted",
    "JobTaskAdded",
    "JobTaskCountsChanged",
    "JobTasksWaiting",
    "TaskAdded",
    "TaskAssigned",
    "TaskStarted",
    "TaskCompleted",
    "TaskRetried",
    "TaskRequeued",
    "TaskTerminated",
    "TaskDeleted",
    "TaskOutputsUploaded",
    "TaskCancelled",
    "JobPreparationEnded",
    "JobReleaseEnded",
    "RequestRecorded",
    "AppVersionPublished",
    "AppDefaultVersionSet",
    "JobUpdated",
];

/// The newest golden folder. Bump the minor number when event types are
/// added without a layout change, and record it.
const LATEST: &str = "v5.1";

/// Rebuilds every entity of a store into JSON, keyed by entity name.
fn rebuild_all(store: &EventStore) -> BTreeMap<String, serde_json::Value> {
    let mut states: BTreeMap<String, AnyState> = BTreeMap::new();
    store
        .scan_streams(None, |e| {
            states
                .entry(e.stream.to_string())
                .or_insert_with(|| AnyState::new(e.stream.kind()))
                .apply(&e)
                .unwrap();
            Ok(())
        })
        .unwrap();
    states.into_iter().map(|(k, v)| (k, v.to_json())).collect()
}

/// A scenario that produces every event type at least once.
async fn record_scenario(core: &Core) {
    let c = core.clock().clone();
    let ctx = |p: Principal| live_ctx(c.as_ref(), p);
    let admin = Principal::Admin;
    let acct = account_stream();
    core.execute::<Account>(&acct, create_account_cmd(), ctx(admin.clone()))
        .await
        .unwrap();
    core.execute::<Account>(
        &acct,
        AccountCommand::RegenerateKey {
            key: KeyKind::Secondary,
        },
        ctx(admin.clone()),
    )
    .await
    .unwrap();
    core.execute::<Account>(&acct, AccountCommand::DisableAccount, ctx(admin.clone()))
        .await
        .unwrap();
    core.execute::<Account>(&acct, AccountCommand::EnableAccount, ctx(admin.clone()))
        .await
        .unwrap();
    let gone = AccountName::new("gone").unwrap();
    core.execute::<Account>(
        &StreamId::account(&gone),
        AccountCommand::CreateAccount { name: gone.clone() },
        ctx(admin.clone()),
    )
    .await
    .unwrap();
    core.execute::<Account>(
        &StreamId::account(&gone),
        AccountCommand::DeleteAccount,
        ctx(admin.clone()),
    )
    .await
    .unwrap();

    let pool = StreamId::pool(&acme(), &pool_id());
    core.execute::<Pool>(
        &pool,
        PoolCommand::CreatePool {
            spec: lote::domain::pool::PoolSpec {
                application_packages: vec![lote::domain::spec::PackageRef {
                    id: "tool".into(),
                    version: Some("1.0".into()),
                }],
                secrets: vec![lote::domain::pool::PoolSecret {
                    name: "db".into(),
                    value: lote::types::Secret::new("sealed:v1:00"),
                    start_task_env: true,
                }],
                task_settings: lote::domain::pool::TaskSettings {
                    user_scope: lote::domain::pool::UserScope::Pool,
                    elevation: lote::domain::pool::Elevation::NonAdmin,
                    start_task_elevation: lote::domain::pool::Elevation::Admin,
                    memory_mib: Some(512),
                    processes_max: Some(100),
                    cpu_weight: Some(200),
                },
                ..pool_spec(2)
            },
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Pool>(
        &pool,
        PoolCommand::ResizePool {
            target_nodes: 3,
            deallocation: Deallocation::TaskCompletion,
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Pool>(&pool, PoolCommand::StopResize, ctx(user()))
        .await
        .unwrap();
    core.execute::<Pool>(&pool, PoolCommand::RotateJoinToken, ctx(user()))
        .await
        .unwrap();
    core.execute::<Pool>(
        &pool,
        PoolCommand::SetSecret {
            secret: lote::domain::pool::PoolSecret {
                name: "tls-key".into(),
                value: lote::types::Secret::new("sealed:v1:01"),
                start_task_env: false,
            },
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Pool>(
        &pool,
        PoolCommand::RemoveSecret { name: "db".into() },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Pool>(
        &pool,
        PoolCommand::UpdatePool {
            start_task: Some(lote::domain::pool::StartTaskUpdate::Remove),
            application_packages: Some(vec![]),
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Pool>(&pool, PoolCommand::CompleteResize, ctx(system()))
        .await
        .unwrap();
    core.execute::<Pool>(
        &pool,
        PoolCommand::EnableAutoscale {
            formula: "$TargetDedicatedNodes = 2;".into(),
            evaluation_interval_secs: 300,
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Pool>(
        &pool,
        PoolCommand::RecordSample {
            sample: PoolSample {
                at: core.clock().now(),
                values: vec![3.0, 1.0, 4.0],
            },
        },
        ctx(system()),
    )
    .await
    .unwrap();
    // A run that resizes (3 -> 2), then one that failed and changes nothing.
    let error = AutoscaleRunError {
        code: "InsufficientSampleData".into(),
        message:
            "Line 1, Col 5: Insufficient data from data set: $PendingTasks wanted 70%, received 50%"
                .into(),
    };
    for (before, after, error) in [(3, Some(2), None), (2, None, Some(error))] {
        let run = AutoscaleRun {
            at: core.clock().now(),
            results: "$TargetDedicatedNodes=2;$NodeDeallocationOption=requeue".into(),
            error,
            target_before: before,
            target_after: after,
            deallocation: Deallocation::Requeue,
            inputs: format!("$PendingTasks=4 samples={before}"),
        };
        core.execute::<Pool>(
            &pool,
            PoolCommand::RecordAutoscaleRun { run },
            ctx(system()),
        )
        .await
        .unwrap();
    }
    core.execute::<Pool>(&pool, PoolCommand::CompleteResize, ctx(system()))
        .await
        .unwrap();
    core.execute::<Pool>(&pool, PoolCommand::DisableAutoscale, ctx(user()))
        .await
        .unwrap();

    let info = AgentInfo {
        hostname: "h1".into(),
        address: "127.0.0.1:7101".into(),
        cores: 2,
        memory_mib: 2048,
        task_slots: 2,
        agent_version: "0.1.0".into(),
    };
    for i in 0..2 {
        let id = NodeId::new(format!("n{i}")).unwrap();
        let s = StreamId::node(&acme(), &pool_id(), &id);
        core.execute::<Node>(
            &s,
            NodeCommand::AddNode {
                account: acme(),
                pool: pool_id(),
                node: id.clone(),
                name: format!("tvm-{i}"),
            },
            ctx(system()),
        )
        .await
        .unwrap();
        let me = agent(&format!("n{i}"));
        core.execute::<Node>(
            &s,
            NodeCommand::RegisterAgent {
                agent: info.clone(),
                has_start_task: true,
            },
            ctx(me.clone()),
        )
        .await
        .unwrap();
        core.execute::<Node>(&s, NodeCommand::BeginStartTask, ctx(me.clone()))
            .await
            .unwrap();
        if i == 1 {
            core.execute::<Node>(
                &s,
                NodeCommand::FinishStartTask {
                    success: false,
                    exit_code: Some(1),
                    message: "exit 1".into(),
                },
                ctx(me.clone()),
            )
            .await
            .unwrap();
            core.execute::<Node>(&s, NodeCommand::BeginStartTask, ctx(me.clone()))
                .await
                .unwrap();
        }
        core.execute::<Node>(
            &s,
            NodeCommand::FinishStartTask {
                success: true,
                exit_code: Some(0),
                message: String::new(),
            },
            ctx(me),
        )
        .await
        .unwrap();
    }
    let n0 = StreamId::node(&acme(), &pool_id(), &NodeId::new("n0").unwrap());
    let n1 = StreamId::node(&acme(), &pool_id(), &NodeId::new("n1").unwrap());

    let job = StreamId::job(&acme(), &job_id());
    core.execute::<Job>(
        &job,
        JobCommand::CreateJob {
            spec: lote::domain::job::JobSpec {
                common_resource_files: vec![lote::domain::spec::ResourceFile {
                    source: lote::domain::spec::ResourceSource::Blob {
                        container: "programs".into(),
                        name: "render".into(),
                    },
                    path: "bin/render".into(),
                    mode: Some(0o755),
                }],
                job_manager: Some(Box::new(lote::domain::job::JobManager {
                    task: task_spec("jobmanager"),
                    kill_job_on_completion: false,
                    run_exclusive: true,
                })),
                dependencies: Some(lote::domain::job::JobDependencies {
                    on_failed_parent: lote::domain::task_spec::DependencyAction::Block,
                }),
                preparation: Some(Box::new(lote::domain::job_prep::JobPreparation {
                    command_line: lote::domain::spec::CommandLine::Shell("./fetch".into()),
                    env: vec![],
                    resource_files: vec![],
                    max_wall_clock_secs: Some(600),
                    retry_count_max: 2,
                    wait_for_success: true,
                    rerun_on_reboot_after_success: false,
                })),
                release: Some(Box::new(lote::domain::job_prep::JobRelease {
                    command_line: lote::domain::spec::CommandLine::Shell("./clean".into()),
                    env: vec![],
                    max_wall_clock_secs: 300,
                })),
                common_env: vec![lote::domain::EnvVar {
                    name: "SCENE".into(),
                    value: "forest".into(),
                }],
                metadata: vec![lote::domain::job_prep::MetadataItem {
                    name: "owner".into(),
                    value: "render-team".into(),
                }],
                ..job_spec()
            },
        },
        ctx(user()),
    )
    .await
    .unwrap();
    for i in 0..5 {
        let mut spec = task_spec(&format!("t{i}"));
        if i == 2 {
            spec.application_packages = vec![lote::domain::spec::PackageRef {
                id: "tool".into(),
                version: None,
            }];
            spec.output_files = vec![lote::domain::spec::OutputFile {
                pattern: "out/*.png".into(),
                container: "results".into(),
                path_prefix: "frames/".into(),
                upload_condition: lote::domain::spec::UploadCondition::Success,
            }];
        }
        core.add_task(&acme(), &job_id(), spec, ctx(user()))
            .await
            .unwrap();
    }
    let task = |i: u32| StreamId::task(&acme(), &job_id(), &TaskId::new(format!("t{i}")).unwrap());
    let node = |i: u32| NodeId::new(format!("n{i}")).unwrap();
    let ok = TaskResult {
        exit_code: Some(0),
        signal: None,
        duration_ms: 1200,
        failure: None,
    };
    let bad = TaskResult {
        exit_code: Some(1),
        signal: None,
        duration_ms: 900,
        failure: Some((FailureCategory::NonZeroExit, "exit code 1".into())),
    };
    // t0: succeeds. t1: fails, retried, succeeds. t2: requeued after node loss.
    for (i, n) in [(0, 0), (1, 0), (2, 1)] {
        core.execute::<Task>(
            &task(i),
            TaskCommand::AssignTask { node: node(n) },
            ctx(system()),
        )
        .await
        .unwrap();
        core.execute::<Task>(
            &task(i),
            TaskCommand::StartTask { attempt: 1 },
            ctx(agent(&format!("n{n}"))),
        )
        .await
        .unwrap();
    }
    core.execute::<Node>(
        &n0,
        NodeCommand::ReportLoad { running_tasks: 2 },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Task>(
        &task(0),
        TaskCommand::CompleteTask {
            attempt: 1,
            result: ok.clone(),
            outputs: vec![],
        },
        ctx(agent("n0")),
    )
    .await
    .unwrap();
    core.execute::<Task>(
        &task(1),
        TaskCommand::CompleteTask {
            attempt: 1,
            result: bad,
            outputs: vec![],
        },
        ctx(agent("n0")),
    )
    .await
    .unwrap();
    core.execute::<Task>(
        &task(1),
        TaskCommand::AssignTask { node: node(0) },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Task>(
        &task(1),
        TaskCommand::CompleteTask {
            attempt: 2,
            result: ok.clone(),
            outputs: vec![],
        },
        ctx(agent("n0")),
    )
    .await
    .unwrap();
    core.execute::<Node>(
        &n0,
        NodeCommand::ReportLoad { running_tasks: 0 },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Node>(
        &n1,
        NodeCommand::MarkUnusable {
            reason: "no heartbeat for 5s".into(),
        },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Task>(
        &task(2),
        TaskCommand::RequeueTask {
            attempt: 1,
            reason: "node n1 lost".into(),
        },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Node>(&n1, NodeCommand::Reboot, ctx(user()))
        .await
        .unwrap();
    core.execute::<Node>(
        &n1,
        NodeCommand::RegisterAgent {
            agent: info.clone(),
            has_start_task: false,
        },
        ctx(agent("n1")),
    )
    .await
    .unwrap();
    core.execute::<Node>(&n1, NodeCommand::Reimage, ctx(user()))
        .await
        .unwrap();
    core.execute::<Node>(
        &n1,
        NodeCommand::RegisterAgent {
            agent: info.clone(),
            has_start_task: false,
        },
        ctx(agent("n1")),
    )
    .await
    .unwrap();
    core.execute::<Node>(&n1, NodeCommand::DisableScheduling, ctx(user()))
        .await
        .unwrap();
    core.execute::<Node>(&n1, NodeCommand::EnableScheduling, ctx(user()))
        .await
        .unwrap();
    core.execute::<Node>(
        &n1,
        NodeCommand::RemoveNode {
            deallocation: Deallocation::Requeue,
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Node>(&n1, NodeCommand::FinishRemoval, ctx(system()))
        .await
        .unwrap();
    core.execute::<Task>(
        &task(3),
        TaskCommand::TerminateTask {
            reason: "not needed".into(),
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Task>(&task(4), TaskCommand::DeleteTask, ctx(user()))
        .await
        .unwrap();
    // The job's preparation ran on n0 (after a retry) and its release.
    for command in [
        JobCommand::RecordPreparation {
            node: NodeId::new("n0").unwrap(),
            status: lote::domain::job_prep::NodeTaskStatus {
                succeeded: true,
                exit_code: Some(0),
                retries: 1,
                failure: None,
            },
        },
        JobCommand::RecordRelease {
            node: NodeId::new("n0").unwrap(),
            status: lote::domain::job_prep::NodeTaskStatus {
                succeeded: false,
                exit_code: Some(2),
                retries: 0,
                failure: Some("exit code 2".into()),
            },
        },
    ] {
        core.execute::<Job>(&job, command, ctx(system()))
            .await
            .unwrap();
    }
    // t5 waits for t3 (terminated) and the range 0-9 (none numeric), with
    // exit conditions; a parent's failure under cancel ends it unrun.
    let mut t5 = task_spec("t5");
    t5.depends_on = lote::domain::task_spec::TaskDependencies {
        task_ids: vec![TaskId::new("t3").unwrap()],
        ranges: vec![lote::domain::task_spec::TaskIdRange { start: 0, end: 9 }],
    };
    t5.exit_conditions = Some(Box::new(lote::domain::task_spec::ExitConditions {
        exit_codes: vec![(
            3,
            lote::domain::task_spec::ExitOptions {
                job_action: Some(lote::domain::task_spec::JobAction::Disable),
                dependency_action: Some(lote::domain::task_spec::DependencyAction::Satisfy),
                retry: Some(false),
            },
        )],
        exit_code_ranges: vec![(10, 20, Default::default())],
        pre_processing_error: None,
        file_upload_error: None,
        default: Some(lote::domain::task_spec::ExitOptions {
            job_action: None,
            dependency_action: Some(lote::domain::task_spec::DependencyAction::Cancel),
            retry: Some(true),
        }),
    }));
    core.add_task(&acme(), &job_id(), t5, ctx(user()))
        .await
        .unwrap();
    core.execute::<Task>(
        &task(5),
        TaskCommand::CancelTask {
            reason: "a parent failed: t3, terminated".into(),
        },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Job>(
        &job,
        JobCommand::DisableJob {
            disable_tasks: DisableTasks::Requeue,
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Job>(&job, JobCommand::EnableJob, ctx(user()))
        .await
        .unwrap();
    core.execute::<Job>(
        &job,
        JobCommand::RecordWaiting {
            slots: 1,
            tasks: 2,
            reasons: vec![
                WaitReason::SomeNodesNotWorking {
                    nodes: 1,
                    of: 3,
                    starting: 0,
                    waiting_for_start_task: 0,
                    start_task_failed: 0,
                    offline: 1,
                    unusable: 0,
                    rebooting: 0,
                    leaving: 0,
                },
                WaitReason::NodesFull {
                    nodes: 2,
                    used: 4,
                    slots: 4,
                    most_free: 0,
                    needs: 1,
                },
            ],
        },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Task>(
        &task(2),
        TaskCommand::AssignTask { node: node(0) },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Job>(
        &job,
        JobCommand::TerminateJob {
            reason: "user asked".into(),
        },
        ctx(user()),
    )
    .await
    .unwrap();
    core.execute::<Task>(
        &task(2),
        TaskCommand::CompleteTask {
            attempt: 2,
            result: ok,
            outputs: vec![lote::domain::task::OutputManifestEntry {
                path: "out/t2.png".into(),
                container: "results".into(),
                name: "frames/out/t2.png".into(),
                size: 4,
                sha256: "0a".repeat(32),
            }],
        },
        ctx(agent("n0")),
    )
    .await
    .unwrap();
    core.execute::<Job>(
        &job,
        JobCommand::CompleteJob {
            reason: "user asked".into(),
        },
        ctx(system()),
    )
    .await
    .unwrap();
    core.execute::<Job>(&job, JobCommand::DeleteJob, ctx(user()))
        .await
        .unwrap();
    core.execute::<Pool>(&pool, PoolCommand::DeletePool, ctx(user()))
        .await
        .unwrap();
    core.execute::<Pool>(&pool, PoolCommand::FinishDeletion, ctx(system()))
        .await
        .unwrap();

    record_schedules(core).await;
    record_apps(core).await;

    // A create with a client request id: its idempotency record commits
    // with it (as the server writes it).
    let mut spec = pool_spec(1);
    spec.id = lote::types::PoolId::new("idempotent").unwrap();
    let record = lote::domain::request::RequestEvent::RequestRecorded {
        request: "CreatePool".into(),
        body_sha256: "0f".repeat(32),
        at: c.now(),
    };
    let extra = vec![lote::store::StreamAppend {
        stream: StreamId::request(&acme(), &uuid::Uuid::from_u128(1)),
        expected: lote::store::ExpectedVersion::NoStream,
        events: vec![lote::domain::to_new_event(&record).unwrap()],
    }];
    core.execute_with::<Pool>(
        &StreamId::pool(&acme(), &spec.id),
        PoolCommand::CreatePool { spec },
        ctx(user()),
        extra,
    )
    .await
    .unwrap();
}

/// Two versions of an app, its default moved; a run of it on an auto
/// pool (the job and its pool made in one append).
async fn record_apps(core: &Core) {
    use lote::domain::app::{definition, submit, App, AppCommand};
    let c = core.clock().clone();
    let ctx = |p: Principal| live_ctx(c.as_ref(), p);
    let text = r#"
name = "zoom"
version = "1.0"
description = "frames of a zoom"
[parameters.frames]
type = "integer"
default = 4
min = 1
[parameters.palette]
type = "choice"
choices = ["fire", "ice"]
default = "fire"
[split]
range = { from = "frames", to = "frames", chunk = 2 }
[[stages]]
command = "{app}/zoom {range.from} {range.to}"
outputs = [{ pattern = "*.pgm", kind = "output" }, { pattern = "log", kind = "log" }]
[outcomes]
retry_exit_codes = [75]
[merge]
command = "{app}/zoom merge --palette {palette}"
output = "zoom.png"
preview = "preview.png"
"#;
    let v1 = definition::parse(text).unwrap();
    let v2 = definition::parse(&text.replace("version = \"1.0\"", "version = \"2.0\"")).unwrap();
    let app = StreamId::app(&acme(), "zoom");
    for (def, make_default) in [(v1.clone(), false), (v2, true)] {
        core.execute::<App>(
            &app,
            AppCommand::Publish {
                account: acme(),
                definition: Box::new(def),
                make_default,
            },
            ctx(user()),
        )
        .await
        .unwrap();
    }
    core.execute::<App>(
        &app,
        AppCommand::SetDefault {
            version: "1.0".into(),
        },
        ctx(user()),
    )
    .await
    .unwrap();
    let job = lote::types::JobId::new("zoom-run").unwrap();
    let pool = lote::types::PoolId::new("zoom-run").unwrap();
    let values = submit::check_run(&v1, &[("frames".into(), "3".into())], &[]).unwrap();
    let run = submit::expand(
        &v1,
        &values,
        submit::RunTarget {
            account: &acme(),
            job: &job,
            pool: &pool,
            inputs: &[],
            lines: None,
        },
    )
    .unwrap();
    let mut spec = run.job;
    spec.auto_pool = Some(Box::new(lote::domain::job::AutoPool {
        pool: lote::domain::pool::PoolSpec::fixed(pool, acme(), 1, 2),
        keep_alive: false,
    }));
    core.create_job_with_tasks(spec.clone(), run.tasks, ctx(user()), vec![])
        .await
        .unwrap();
    // New settings while it runs.
    let updated = lote::domain::job::JobSpec {
        priority: 300,
        max_wall_clock_secs: Some(3600),
        ..spec
    };
    core.execute::<Job>(
        &StreamId::job(&acme(), &job),
        JobCommand::UpdateJob { spec: updated },
        ctx(user()),
    )
    .await
    .unwrap();
}

/// Two job schedules through every event of theirs.
async fn record_schedules(core: &Core) {
    use lote::domain::schedule::{
        Overlap, Recurrence, Schedule, ScheduleCommand, ScheduleSpec, SkipReason,
    };
    let c = core.clock().clone();
    let ctx = |p: Principal| live_ctx(c.as_ref(), p);
    let spec = |id: &str, recurrence| ScheduleSpec {
        id: lote::types::JobId::new(id).unwrap(),
        account: acme(),
        display_name: "golden".into(),
        recurrence,
        not_before: None,
        not_after: None,
        start_window_secs: Some(30),
        overlap: Overlap::Skip,
        job: lote::domain::job::JobSpec::on_pool(
            lote::types::JobId::new(id).unwrap(),
            acme(),
            pool_id(),
        ),
        tasks: vec![],
    };
    let nightly = spec(
        "nightly",
        Recurrence::Cron {
            expression: "0 2 * * *".into(),
            time_zone: "Europe/Madrid".into(),
        },
    );
    let stream = StreamId::schedule(&acme(), &nightly.id);
    let run = |command: ScheduleCommand, by: Principal| {
        let (stream, ctx) = (stream.clone(), ctx(by));
        async move {
            core.execute::<Schedule>(&stream, command, ctx)
                .await
                .unwrap();
        }
    };
    run(
        ScheduleCommand::Create {
            spec: nightly.clone(),
            interval_floor_secs: 60,
        },
        user(),
    )
    .await;
    run(ScheduleCommand::StartRun { run: 1, due: None }, user()).await;
    run(
        ScheduleCommand::SkipRuns {
            first: 2,
            count: 3,
            due: c.now(),
            reason: SkipReason::StartWindowPassed,
        },
        system(),
    )
    .await;
    run(ScheduleCommand::RunEnded { run: 1 }, system()).await;
    run(
        ScheduleCommand::Update {
            spec: ScheduleSpec {
                recurrence: Recurrence::Every { secs: 3600 },
                ..nightly
            },
            interval_floor_secs: 60,
        },
        user(),
    )
    .await;
    run(ScheduleCommand::Disable, user()).await;
    run(ScheduleCommand::Enable, user()).await;
    run(ScheduleCommand::Terminate, user()).await;
    run(ScheduleCommand::Complete, system()).await;

    let once = spec("once", Recurrence::Once);
    let stream = StreamId::schedule(&acme(), &once.id);
    for (command, by) in [
        (
            ScheduleCommand::Create {
                spec: once,
                interval_floor_secs: 60,
            },
            user(),
        ),
        (ScheduleCommand::Delete, user()),
        (ScheduleCommand::FinishDeletion, system()),
    ] {
        core.execute::<Schedule>(&stream, command, ctx(by))
            .await
            .unwrap();
    }
}

/// Fields that came with a layout change, at the value its lift gives
/// events recorded before it.
type Lifted = fn() -> serde_json::Value;
const LIFTED_DEFAULTS: &[(&str, Lifted)] = &[
    (
        // PoolCreated 2 → 3: one user for the pool, as before; nothing else set.
        "task_settings",
        || {
            serde_json::json!({
                "user_scope": "pool", "elevation": "non_admin", "start_task_elevation": "non_admin",
                "memory_mib": null, "processes_max": null, "cpu_weight": null
            })
        },
    ),
    // TaskAdded 2 → 3 (and the specs in jobs and schedules): no parents.
    (
        "depends_on",
        || serde_json::json!({"task_ids": [], "ranges": []}),
    ),
];

/// Whether a rebuilt state matches a recorded one. States grow fields as
/// lote grows (a task's output manifest, a spec's packages): a field the
/// recording lacks must rebuild to its empty default, never to a value.
fn same_state(recorded: &serde_json::Value, rebuilt: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (recorded, rebuilt) {
        (Value::Object(r), Value::Object(b)) => {
            r.iter()
                .all(|(k, v)| b.get(k).is_some_and(|got| same_state(v, got)))
                && b.iter().all(|(k, v)| {
                    // A field added since, at its default, or at the value
                    // its upcaster gives recordings that lack it.
                    r.contains_key(k)
                        || matches!(v, Value::Null | Value::Bool(false))
                        || v.as_u64() == Some(0)
                        || v.as_array().is_some_and(|a| a.is_empty())
                        || v.as_object().is_some_and(|o| o.is_empty())
                        || LIFTED_DEFAULTS
                            .iter()
                            .any(|(name, lifted)| k == name && *v == lifted())
                })
        }
        (Value::Array(r), Value::Array(b)) => {
            r.len() == b.len() && r.iter().zip(b).all(|(r, b)| same_state(r, b))
        }
        (r, b) => r == b,
    }
}

fn record(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = EventStore::open(data.path(), StoreOptions::default(), Arc::new(clock())).unwrap();
    let core = Core::new(
        store.clone(),
        Arc::new(lote::clock::SystemClock),
        CoreConfig::default(),
    );
    actix::System::new().block_on(async move { record_scenario(&core).await });
    lote::golden::export(&store, &dir.join("log.bin")).unwrap();
    let states = rebuild_all(&store);
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_string_pretty(&states).unwrap() + "\n",
    )
    .unwrap();
}

#[test]
fn golden_logs_replay_to_their_recorded_state() {
    let latest = golden_root().join(LATEST);
    let newest = newest_layout();
    assert!(
        LATEST == format!("v{newest}") || LATEST.starts_with(&format!("v{newest}.")),
        "LATEST names another layout than v{newest}, the newest of any event type"
    );
    if !latest.exists() && std::env::var_os("LOTE_RECORD_GOLDEN").is_some() {
        record(&latest);
    }
    assert!(
        latest.join("log.bin").exists(),
        "no golden log {LATEST}; record it (see this file's header)"
    );

    let mut versions = 0;
    for entry in std::fs::read_dir(golden_root()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("log.bin").exists() {
            continue;
        }
        versions += 1;
        let data = tempfile::tempdir().unwrap();
        let store =
            EventStore::open(data.path(), StoreOptions::default(), Arc::new(clock())).unwrap();
        let imported = lote::golden::import(&store, &dir.join("log.bin")).unwrap();
        assert!(imported > 0);
        let report = lote::replay::replay(&store).unwrap();
        assert!(
            report.mismatches.is_empty(),
            "{}: {:?}",
            dir.display(),
            report.mismatches
        );
        let expected: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let rebuilt = rebuild_all(&store);
        for (entity, state) in &expected {
            let got = rebuilt.get(entity).cloned().unwrap_or_default();
            assert!(
                same_state(state, &got),
                "{}: {entity} rebuilds differently:\n{state}\n{got}",
                dir.display()
            );
        }
        assert_eq!(
            rebuilt.len(),
            expected.len(),
            "{}: entity set differs",
            dir.display()
        );

        if dir == latest {
            let mut seen = BTreeSet::new();
            store
                .scan_streams(None, |e| {
                    seen.insert(e.event_type.clone());
                    Ok(())
                })
                .unwrap();
            let missing: Vec<_> = EVENT_TYPES.iter().filter(|t| !seen.contains(**t)).collect();
            assert!(
                missing.is_empty(),
                "the current golden log lacks {missing:?}"
            );
        }
    }
    assert!(versions >= 1);
}

#[test]
fn a_damaged_export_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let current = golden_root()
        .join(format!("v{CURRENT_EVENT_SCHEMA}"))
        .join("log.bin");
    assert!(current.exists(), "no golden log at {}", current.display());
    let mut bytes = std::fs::read(&current).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let damaged = dir.path().join("log.bin");
    std::fs::write(&damaged, &bytes).unwrap();
    let err = lote::golden::read_export(&damaged).unwrap_err();
    assert!(err.to_string().contains("record"), "{err}");
    std::fs::write(&damaged, b"something else").unwrap();
    assert!(matches!(
        lote::golden::read_export(&damaged),
        Err(lote::golden::ExportError::BadMagic)
    ));
}
