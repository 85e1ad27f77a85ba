//! Given / when / then tests per aggregate, covering every rejection code
//! that `decide` can produce.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;

use common::*;
use lote::domain::account::{Account, AccountCommand, AccountEvent, AccountStatus, KeyKind};
use lote::domain::job::{DisableTasks, Job, JobCommand, JobEvent, JobStatus, OnAllTasksComplete};
use lote::domain::node::{AgentInfo, Node, NodeCommand, NodeEvent, NodeState};
use lote::domain::pool::{Deallocation, Pool, PoolCommand, PoolEvent, ResizeState, ScaleSettings};
use lote::domain::task::{
    self, FailureCategory, Task, TaskBucket, TaskCommand, TaskEvent, TaskResult, TaskStatus,
};
use lote::domain::{Aggregate, Ctx, EnvVar, Rejection, RejectionCode};
use lote::types::{NodeId, Principal};

/// Codes seen by the tests of this file; the last test checks coverage.
static SEEN: Mutex<Vec<RejectionCode>> = Mutex::new(Vec::new());

fn given<A: Aggregate>(events: &[A::Event]) -> A {
    let mut state = A::default();
    for e in events {
        state.apply(e);
        state.sanity_check().unwrap();
    }
    state
}

/// Decides and applies; returns the events and the new state.
fn then_ok<A: Aggregate>(state: &A, command: A::Command, ctx: &Ctx) -> (Vec<A::Event>, A) {
    let events = state
        .decide(&command, ctx)
        .unwrap_or_else(|r| panic!("{command:?} refused: {r}"));
    let mut next = state.clone();
    for e in &events {
        next.apply(e);
    }
    next.sanity_check().unwrap();
    (events, next)
}

fn then_rejected<A: Aggregate>(
    state: &A,
    command: A::Command,
    ctx: &Ctx,
    code: RejectionCode,
) -> Rejection {
    match state.decide(&command, ctx) {
        Ok(events) => panic!("{command:?} was accepted with {events:?}; expected {code:?}"),
        Err(r) => {
            assert_eq!(r.code, code, "{command:?}: {r}");
            assert!(!r.detail.is_empty());
            SEEN.lock().unwrap().push(code);
            r
        }
    }
}

fn admin() -> Ctx {
    ctx(Principal::Admin)
}

#[test]
fn account_lifecycle_and_rejections() {
    let a: Account = given(&[]);
    then_rejected(
        &a,
        create_account_cmd(),
        &ctx(user()),
        RejectionCode::PermissionDenied,
    );
    then_rejected(
        &a,
        AccountCommand::RegenerateKey {
            key: KeyKind::Primary,
        },
        &admin(),
        RejectionCode::AccountNotFound,
    );

    let (events, a) = then_ok(&a, create_account_cmd(), &admin());
    assert!(matches!(events[..], [AccountEvent::AccountCreated { .. }]));
    assert_eq!(a.status, AccountStatus::Active);
    then_rejected(
        &a,
        create_account_cmd(),
        &admin(),
        RejectionCode::AccountExists,
    );
    then_rejected(
        &a,
        AccountCommand::EnableAccount,
        &admin(),
        RejectionCode::AccountNotDisabled,
    );

    let old_primary = a.primary_key.clone().unwrap();
    let old_secondary = a.secondary_key.clone().unwrap();
    let (_, a) = then_ok(
        &a,
        AccountCommand::RegenerateKey {
            key: KeyKind::Primary,
        },
        &ctx_n(Principal::Admin, 99),
    );
    assert!(
        !a.key_matches(old_primary.expose()),
        "the old primary key must stop working"
    );
    assert!(
        a.key_matches(old_secondary.expose()),
        "the secondary key must keep working"
    );

    let (_, a) = then_ok(&a, AccountCommand::DisableAccount, &admin());
    then_rejected(
        &a,
        AccountCommand::DisableAccount,
        &admin(),
        RejectionCode::AccountDisabled,
    );
    let (_, a) = then_ok(&a, AccountCommand::EnableAccount, &admin());
    let (_, a) = then_ok(&a, AccountCommand::DeleteAccount, &admin());
    assert!(a.is_finished());
    assert!(
        !a.key_matches(old_secondary.expose()),
        "a deleted account's keys never authenticate"
    );
    then_rejected(
        &a,
        AccountCommand::DeleteAccount,
        &admin(),
        RejectionCode::AccountNotFound,
    );
    then_rejected(
        &a,
        create_account_cmd(),
        &admin(),
        RejectionCode::AccountExists,
    );
}

fn pool_created(target: u32) -> Vec<PoolEvent> {
    then_ok(
        &Pool::default(),
        PoolCommand::CreatePool {
            spec: pool_spec(target),
        },
        &ctx(user()),
    )
    .0
}

#[test]
fn pool_lifecycle_and_rejections() {
    let p: Pool = given(&[]);
    let mut bad = pool_spec(2);
    bad.node_size.task_slots = 0;
    let r = then_rejected(
        &p,
        PoolCommand::CreatePool { spec: bad },
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    assert!(r.detail.contains("task_slots"), "{r}");
    let mut bad = pool_spec(9);
    bad.node_count_max = 8;
    then_rejected(
        &p,
        PoolCommand::CreatePool { spec: bad },
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    let other = Principal::Account {
        account: lote::types::AccountName::new("other").unwrap(),
    };
    then_rejected(
        &p,
        PoolCommand::CreatePool { spec: pool_spec(1) },
        &ctx(other.clone()),
        RejectionCode::PermissionDenied,
    );
    then_rejected(
        &p,
        PoolCommand::DeletePool,
        &ctx(user()),
        RejectionCode::PoolNotFound,
    );

    let p: Pool = given(&pool_created(2));
    assert_eq!((p.target_nodes, p.resize), (2, ResizeState::Resizing));
    // Another account's pool is indistinguishable from no pool.
    then_rejected(
        &p,
        PoolCommand::DeletePool,
        &ctx(other),
        RejectionCode::PoolNotFound,
    );
    then_rejected(
        &p,
        PoolCommand::CreatePool { spec: pool_spec(1) },
        &ctx(user()),
        RejectionCode::PoolExists,
    );
    then_rejected(
        &p,
        PoolCommand::ResizePool {
            target_nodes: 99,
            deallocation: Deallocation::Requeue,
        },
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    let (_, p) = then_ok(&p, PoolCommand::StopResize, &ctx(user()));
    assert_eq!(p.resize, ResizeState::Stopping);
    let (_, p) = then_ok(&p, PoolCommand::CompleteResize, &ctx(system()));
    then_rejected(
        &p,
        PoolCommand::StopResize,
        &ctx(user()),
        RejectionCode::PoolNotResizing,
    );
    then_rejected(
        &p,
        PoolCommand::DisableAutoscale,
        &ctx(user()),
        RejectionCode::PoolAutoscaleNotEnabled,
    );
    let r = then_rejected(
        &p,
        PoolCommand::EnableAutoscale {
            formula: "$TargetDedicatedNodes = 1;".into(),
            evaluation_interval_secs: 1,
        },
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    assert!(r.detail.contains("interval"), "{r}");
    let (_, p) = then_ok(
        &p,
        PoolCommand::EnableAutoscale {
            formula: "$TargetDedicatedNodes = 1;".into(),
            evaluation_interval_secs: 300,
        },
        &ctx(user()),
    );
    then_rejected(
        &p,
        PoolCommand::ResizePool {
            target_nodes: 3,
            deallocation: Deallocation::TaskCompletion,
        },
        &ctx(user()),
        RejectionCode::PoolAutoscaleEnabled,
    );
    let (_, p) = then_ok(&p, PoolCommand::DisableAutoscale, &ctx(user()));
    let (_, p) = then_ok(
        &p,
        PoolCommand::ResizePool {
            target_nodes: 3,
            deallocation: Deallocation::TaskCompletion,
        },
        &ctx(user()),
    );
    assert_eq!(p.target_nodes, 3);
    let (_, p) = then_ok(&p, PoolCommand::DeletePool, &ctx(user()));
    then_rejected(
        &p,
        PoolCommand::ResizePool {
            target_nodes: 1,
            deallocation: Deallocation::Requeue,
        },
        &ctx(user()),
        RejectionCode::PoolBeingDeleted,
    );
    let (_, p) = then_ok(&p, PoolCommand::FinishDeletion, &ctx(system()));
    assert!(p.is_finished());
    // The id may be reused after deletion.
    let (_, p) = then_ok(
        &p,
        PoolCommand::CreatePool { spec: pool_spec(0) },
        &ctx(user()),
    );
    assert_eq!(p.resize, ResizeState::Steady);
    let mut auto = pool_spec(0);
    auto.scale = ScaleSettings::Autoscale {
        formula: String::new(),
        evaluation_interval_secs: 60,
    };
    then_rejected(
        &Pool::default(),
        PoolCommand::CreatePool { spec: auto },
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
}

fn agent_info() -> AgentInfo {
    AgentInfo {
        hostname: "h".into(),
        address: "127.0.0.1:1".into(),
        cores: 2,
        memory_mib: 2048,
        task_slots: 2,
        agent_version: "t".into(),
    }
}

fn node_added(id: &str) -> Vec<NodeEvent> {
    let cmd = NodeCommand::AddNode {
        account: acme(),
        pool: pool_id(),
        node: NodeId::new(id).unwrap(),
        name: format!("tvm-{id}"),
    };
    then_ok(&Node::default(), cmd, &ctx(system())).0
}

#[test]
fn node_lifecycle_and_rejections() {
    let n: Node = given(&[]);
    then_rejected(
        &n,
        NodeCommand::Reboot,
        &ctx(system()),
        RejectionCode::NodeNotFound,
    );
    let n: Node = given(&node_added("n1"));
    assert_eq!(n.state, NodeState::Creating);
    let add = NodeCommand::AddNode {
        account: acme(),
        pool: pool_id(),
        node: NodeId::new("n1").unwrap(),
        name: "x".into(),
    };
    then_rejected(&n, add, &ctx(system()), RejectionCode::NodeExists);
    then_rejected(
        &n,
        NodeCommand::FinishStartTask {
            success: true,
            exit_code: Some(0),
            message: String::new(),
        },
        &ctx(agent("n1")),
        RejectionCode::NodeStateConflict,
    );
    // Another node's agent cannot speak for this node.
    then_rejected(
        &n,
        NodeCommand::RegisterAgent {
            agent: agent_info(),
            has_start_task: true,
        },
        &ctx(agent("n2")),
        RejectionCode::PermissionDenied,
    );

    let (_, n) = then_ok(
        &n,
        NodeCommand::RegisterAgent {
            agent: agent_info(),
            has_start_task: true,
        },
        &ctx(agent("n1")),
    );
    assert_eq!(n.state, NodeState::Starting);
    let (_, n) = then_ok(&n, NodeCommand::BeginStartTask, &ctx(agent("n1")));
    assert_eq!(n.state, NodeState::WaitingForStartTask);
    let (_, n) = then_ok(
        &n,
        NodeCommand::FinishStartTask {
            success: false,
            exit_code: Some(1),
            message: "exit 1".into(),
        },
        &ctx(agent("n1")),
    );
    assert_eq!(n.state, NodeState::StartTaskFailed);
    let (_, n) = then_ok(&n, NodeCommand::BeginStartTask, &ctx(agent("n1")));
    let (_, n) = then_ok(
        &n,
        NodeCommand::FinishStartTask {
            success: true,
            exit_code: Some(0),
            message: String::new(),
        },
        &ctx(agent("n1")),
    );
    assert_eq!(n.state, NodeState::Idle);
    let (_, n) = then_ok(
        &n,
        NodeCommand::ReportLoad { running_tasks: 2 },
        &ctx(system()),
    );
    assert_eq!((n.state, n.running_tasks), (NodeState::Running, 2));
    let (events, _) = then_ok(
        &n,
        NodeCommand::ReportLoad { running_tasks: 2 },
        &ctx(system()),
    );
    assert!(events.is_empty(), "an unchanged load records nothing");
    let (_, n) = then_ok(&n, NodeCommand::DisableScheduling, &ctx(user()));
    assert_eq!(n.state, NodeState::Offline);
    then_rejected(
        &n,
        NodeCommand::DisableScheduling,
        &ctx(user()),
        RejectionCode::NodeStateConflict,
    );
    let (_, n) = then_ok(&n, NodeCommand::EnableScheduling, &ctx(user()));
    assert_eq!(n.state, NodeState::Running);
    let (_, n) = then_ok(
        &n,
        NodeCommand::MarkUnusable {
            reason: "no heartbeat for 5s".into(),
        },
        &ctx(system()),
    );
    assert_eq!((n.state, n.running_tasks), (NodeState::Unusable, 0));
    let (_, n) = then_ok(
        &n,
        NodeCommand::RegisterAgent {
            agent: agent_info(),
            has_start_task: false,
        },
        &ctx(agent("n1")),
    );
    assert_eq!(n.state, NodeState::Idle);
    let (_, n) = then_ok(&n, NodeCommand::Reboot, &ctx(user()));
    assert_eq!(n.state, NodeState::Rebooting);
    let (_, n) = then_ok(
        &n,
        NodeCommand::RegisterAgent {
            agent: agent_info(),
            has_start_task: false,
        },
        &ctx(agent("n1")),
    );
    let (_, n) = then_ok(
        &n,
        NodeCommand::RemoveNode {
            deallocation: Deallocation::TaskCompletion,
        },
        &ctx(user()),
    );
    assert_eq!(n.state, NodeState::LeavingPool);
    then_rejected(
        &n,
        NodeCommand::RemoveNode {
            deallocation: Deallocation::Requeue,
        },
        &ctx(user()),
        RejectionCode::NodeStateConflict,
    );
    let (_, n) = then_ok(&n, NodeCommand::FinishRemoval, &ctx(system()));
    assert_eq!(n.state, NodeState::Removed);
    assert!(
        n.agent.is_none() && n.name.is_empty(),
        "a removed node loses its name and address"
    );
    then_rejected(
        &n,
        NodeCommand::Reboot,
        &ctx(user()),
        RejectionCode::NodeNotFound,
    );
}

fn job_created(on_all: OnAllTasksComplete) -> Vec<JobEvent> {
    let mut spec = job_spec();
    spec.on_all_tasks_complete = on_all;
    then_ok(
        &Job::default(),
        JobCommand::CreateJob { spec },
        &ctx(user()),
    )
    .0
}

#[test]
fn job_lifecycle_and_rejections() {
    let j: Job = given(&[]);
    then_rejected(
        &j,
        JobCommand::EnableJob,
        &ctx(user()),
        RejectionCode::JobNotFound,
    );
    let mut bad = job_spec();
    bad.priority = 5000;
    then_rejected(
        &j,
        JobCommand::CreateJob { spec: bad },
        &ctx(user()),
        RejectionCode::InvalidValue,
    );

    let j: Job = given(&job_created(OnAllTasksComplete::NoAction));
    then_rejected(
        &j,
        JobCommand::CreateJob { spec: job_spec() },
        &ctx(user()),
        RejectionCode::JobExists,
    );
    then_rejected(
        &j,
        JobCommand::EnableJob,
        &ctx(user()),
        RejectionCode::JobNotDisabled,
    );
    then_rejected(
        &j,
        JobCommand::CompleteJob { reason: "x".into() },
        &ctx(system()),
        RejectionCode::JobNotActive,
    );
    then_rejected(
        &j,
        JobCommand::DisableJob {
            disable_tasks: DisableTasks::Wait,
        },
        &ctx(agent("n1")),
        RejectionCode::PermissionDenied,
    );
    let (_, j) = then_ok(
        &j,
        JobCommand::DisableJob {
            disable_tasks: DisableTasks::Requeue,
        },
        &ctx(user()),
    );
    assert_eq!(j.status, JobStatus::Disabled);
    then_rejected(
        &j,
        JobCommand::DisableJob {
            disable_tasks: DisableTasks::Wait,
        },
        &ctx(user()),
        RejectionCode::JobNotActive,
    );
    // Tasks may be added to a disabled job; they wait.
    let (job_events, _) =
        task::add_task(&j, &Task::default(), &task_spec("t1"), &ctx(user())).unwrap();
    let mut j = j;
    for e in &job_events {
        j.apply(e);
    }
    assert_eq!(j.count(TaskBucket::Active), 1);
    let (_, j) = then_ok(&j, JobCommand::EnableJob, &ctx(user()));
    let (events, j) = then_ok(
        &j,
        JobCommand::TerminateJob {
            reason: "user".into(),
        },
        &ctx(user()),
    );
    assert_eq!(
        events.len(),
        1,
        "a job with unfinished tasks terminates, then completes later"
    );
    assert_eq!(j.status, JobStatus::Terminating);
    then_rejected(
        &j,
        JobCommand::TerminateJob {
            reason: "again".into(),
        },
        &ctx(user()),
        RejectionCode::JobBeingTerminated,
    );
    let r = task::add_task(&j, &Task::default(), &task_spec("t2"), &ctx(user())).unwrap_err();
    assert_eq!(r.code, RejectionCode::JobBeingTerminated);
    SEEN.lock().unwrap().push(r.code);

    let (_, j) = then_ok(
        &given::<Job>(&job_created(OnAllTasksComplete::NoAction)),
        JobCommand::TerminateJob {
            reason: "done".into(),
        },
        &ctx(user()),
    );
    assert_eq!(
        j.status,
        JobStatus::Completed,
        "a job with no unfinished task completes at once"
    );
    then_rejected(
        &j,
        JobCommand::DisableJob {
            disable_tasks: DisableTasks::Wait,
        },
        &ctx(user()),
        RejectionCode::JobCompleted,
    );
    let (_, j) = then_ok(&j, JobCommand::DeleteJob, &ctx(user()));
    assert!(j.is_finished());
}

#[test]
fn task_lifecycle_retries_requeues_and_rejections() {
    let job: Job = given(&job_created(OnAllTasksComplete::TerminateJob));
    let t: Task = given(&[]);
    then_rejected(
        &t,
        TaskCommand::AssignTask {
            node: NodeId::new("n1").unwrap(),
        },
        &ctx(system()),
        RejectionCode::TaskNotFound,
    );

    let mut bad = task_spec("t1");
    bad.required_slots = 0;
    let r = task::add_task(&job, &t, &bad, &ctx(user())).unwrap_err();
    assert_eq!(r.code, RejectionCode::InvalidValue);
    let mut bad = task_spec("t1");
    bad.env = vec![EnvVar {
        name: "LOTE_TASK_ID".into(),
        value: "x".into(),
    }];
    assert!(task::add_task(&job, &t, &bad, &ctx(user()))
        .unwrap_err()
        .detail
        .contains("reserved"));
    let mut bad = task_spec("t1");
    bad.resource_files = vec![lote::domain::spec::ResourceFile {
        source: lote::domain::spec::ResourceSource::Url {
            url: "https://example.invalid/x".into(),
        },
        path: "../escape".into(),
        mode: None,
    }];
    assert!(task::add_task(&job, &t, &bad, &ctx(user()))
        .unwrap_err()
        .detail
        .contains("inside the working directory"));

    let (job_events, task_events) =
        task::add_task(&job, &t, &task_spec("t1"), &ctx(user())).unwrap();
    let mut job = job;
    job_events.iter().for_each(|e| job.apply(e));
    let t: Task = given(&task_events);
    assert_eq!(
        (t.status, t.max_task_retries),
        (TaskStatus::Active, 1),
        "retries default from the job"
    );
    let r = task::add_task(&job, &t, &task_spec("t1"), &ctx(user())).unwrap_err();
    assert_eq!(r.code, RejectionCode::TaskExists);
    SEEN.lock().unwrap().push(r.code);
    then_rejected(
        &t,
        TaskCommand::StartTask { attempt: 1 },
        &ctx(agent("n1")),
        RejectionCode::StaleAttempt,
    );
    then_rejected(
        &t,
        TaskCommand::AssignTask {
            node: NodeId::new("n1").unwrap(),
        },
        &ctx(agent("n1")),
        RejectionCode::PermissionDenied,
    );

    let apply_job = |job: &mut Job, before: &Task, after: &Task| {
        if let Some(e) = task::counts_change(&after.spec.as_ref().unwrap().id, before, after) {
            job.apply(&e);
        }
        job.sanity_check().unwrap();
    };

    // Attempt 1 on n1: the node is lost; requeued without using a retry.
    let (_, t1) = then_ok(
        &t,
        TaskCommand::AssignTask {
            node: NodeId::new("n1").unwrap(),
        },
        &ctx(system()),
    );
    apply_job(&mut job, &t, &t1);
    assert_eq!(job.count(TaskBucket::Running), 1);
    then_rejected(
        &t1,
        TaskCommand::AssignTask {
            node: NodeId::new("n2").unwrap(),
        },
        &ctx(system()),
        RejectionCode::TaskStateConflict,
    );
    then_rejected(
        &t1,
        TaskCommand::StartTask { attempt: 1 },
        &ctx(agent("n2")),
        RejectionCode::PermissionDenied,
    );
    let (_, t2) = then_ok(
        &t1,
        TaskCommand::StartTask { attempt: 1 },
        &ctx(agent("n1")),
    );
    then_rejected(
        &t2,
        TaskCommand::StartTask { attempt: 1 },
        &ctx(agent("n1")),
        RejectionCode::TaskStateConflict,
    );
    let (_, t3) = then_ok(
        &t2,
        TaskCommand::RequeueTask {
            attempt: 1,
            reason: "node n1 lost".into(),
        },
        &ctx(system()),
    );
    apply_job(&mut job, &t2, &t3);
    assert_eq!(
        (t3.status, t3.requeue_count, t3.retry_count),
        (TaskStatus::Active, 1, 0)
    );

    // The lost node's late report is refused: exactly one attempt decides.
    let late = TaskResult {
        exit_code: Some(0),
        signal: None,
        duration_ms: 5,
        failure: None,
    };
    then_rejected(
        &t3,
        TaskCommand::CompleteTask {
            attempt: 1,
            result: late,
            outputs: vec![],
        },
        &ctx(agent("n1")),
        RejectionCode::StaleAttempt,
    );

    // Attempt 2 on n2 fails: one retry left, so it is retried.
    let (_, t4) = then_ok(
        &t3,
        TaskCommand::AssignTask {
            node: NodeId::new("n2").unwrap(),
        },
        &ctx(system()),
    );
    assert_eq!(t4.attempt, 2);
    let failed = TaskResult {
        exit_code: Some(2),
        signal: None,
        duration_ms: 10,
        failure: Some((FailureCategory::NonZeroExit, "exit 2".into())),
    };
    let (events, t5) = then_ok(
        &t4,
        TaskCommand::CompleteTask {
            attempt: 2,
            result: failed.clone(),
            outputs: vec![],
        },
        &ctx(agent("n2")),
    );
    assert!(matches!(
        events[..],
        [
            TaskEvent::TaskCompleted { .. },
            TaskEvent::TaskRetried { retry_count: 1, .. }
        ]
    ));
    assert_eq!(t5.status, TaskStatus::Active);

    // Attempt 3 fails too: no retries left, the task fails for good.
    let (_, t6) = then_ok(
        &t5,
        TaskCommand::AssignTask {
            node: NodeId::new("n2").unwrap(),
        },
        &ctx(system()),
    );
    let (events, t7) = then_ok(
        &t6,
        TaskCommand::CompleteTask {
            attempt: 3,
            result: failed,
            outputs: vec![],
        },
        &ctx(agent("n2")),
    );
    assert_eq!(events.len(), 1);
    apply_job(&mut job, &t5, &t7);
    assert_eq!(
        (t7.status, t7.bucket()),
        (TaskStatus::Completed, Some(TaskBucket::Failed))
    );
    assert_eq!(job.count(TaskBucket::Failed), 1);
    assert_eq!(job.completion_due().as_deref(), Some("all tasks completed"));
    then_rejected(
        &t7,
        TaskCommand::TerminateTask {
            reason: "late".into(),
        },
        &ctx(user()),
        RejectionCode::TaskCompleted,
    );
    then_rejected(
        &t7,
        TaskCommand::DeleteTask,
        &ctx(agent("n2")),
        RejectionCode::PermissionDenied,
    );
    let (_, t8) = then_ok(&t7, TaskCommand::DeleteTask, &ctx(user()));
    apply_job(&mut job, &t7, &t8);
    assert_eq!(job.unfinished() + job.count(TaskBucket::Failed), 0);

    // Terminating a queued task completes it as a failure.
    let (_, fresh) =
        task::add_task(&job, &Task::default(), &task_spec("t9"), &ctx(user())).unwrap();
    let t9: Task = given(&fresh);
    let (_, t10) = then_ok(
        &t9,
        TaskCommand::TerminateTask {
            reason: "user asked".into(),
        },
        &ctx(user()),
    );
    assert_eq!(
        t10.last_result.unwrap().failure.unwrap().0,
        FailureCategory::Terminated
    );
}

#[test]
fn request_records_are_written_once() {
    use lote::domain::request::{RequestCommand, RequestRecord, RequestStatus};
    let r: RequestRecord = given(&[]);
    let record = RequestCommand::RecordRequest {
        request: "CreatePool".into(),
        body_sha256: "ab".repeat(32),
    };
    let (events, r) = then_ok(&r, record.clone(), &ctx(user()));
    assert_eq!(events.len(), 1);
    assert_eq!(r.status, RequestStatus::Recorded);
    assert!(r.is_finished());
    then_rejected(&r, record, &ctx(user()), RejectionCode::RequestIdReused);
}

#[test]
fn schedule_lifecycle_and_rejections() {
    use lote::domain::schedule::{
        Overlap, Recurrence, Schedule, ScheduleCommand, ScheduleEvent, ScheduleSpec, ScheduleStatus,
    };
    let spec = ScheduleSpec {
        id: lote::types::JobId::new("nightly").unwrap(),
        account: acme(),
        display_name: String::new(),
        recurrence: Recurrence::Every { secs: 3600 },
        not_before: None,
        not_after: None,
        start_window_secs: None,
        overlap: Overlap::Wait,
        job: job_spec(),
        tasks: vec![],
    };
    let create = |spec: ScheduleSpec| ScheduleCommand::Create {
        spec,
        interval_floor_secs: 60,
    };
    let s: Schedule = given(&[]);
    then_rejected(
        &s,
        ScheduleCommand::Disable,
        &ctx(user()),
        RejectionCode::ScheduleNotFound,
    );
    then_rejected(
        &s,
        create(ScheduleSpec {
            recurrence: Recurrence::Every { secs: 10 },
            ..spec.clone()
        }),
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    // A template whose tasks have parents: the job must use dependencies,
    // and parents must be in the template.
    let mut child = task_spec("child");
    child.depends_on.task_ids = vec![lote::types::TaskId::new("parent").unwrap()];
    let with_child = |dependencies| ScheduleSpec {
        job: lote::domain::job::JobSpec {
            dependencies,
            ..job_spec()
        },
        tasks: vec![child.clone()],
        ..spec.clone()
    };
    let r = then_rejected(
        &s,
        create(with_child(None)),
        &ctx(user()),
        RejectionCode::DependenciesNotEnabled,
    );
    assert!(r.detail.contains("--dependencies"), "{r}");
    let on = Some(lote::domain::job::JobDependencies {
        on_failed_parent: lote::domain::task_spec::DependencyAction::Cancel,
    });
    then_rejected(
        &s,
        create(with_child(on)),
        &ctx(user()),
        RejectionCode::DependencyNotFound,
    );
    let mut complete = with_child(on);
    complete.tasks.push(task_spec("parent"));
    // A range over no template task (its tasks are not numbered).
    let mut ranged = complete.clone();
    let mut merge = task_spec("merge");
    merge.depends_on.ranges = vec![lote::domain::task_spec::TaskIdRange { start: 1, end: 9 }];
    ranged.tasks.push(merge);
    let r = then_rejected(
        &s,
        create(ranged),
        &ctx(user()),
        RejectionCode::DependencyNotFound,
    );
    assert!(r.detail.contains("selects no template task"), "{r}");
    then_ok(&s, create(complete), &ctx(user()));
    let (_, s) = then_ok(&s, create(spec.clone()), &ctx(user()));
    assert_eq!(s.status, ScheduleStatus::Active);
    then_rejected(
        &s,
        create(spec.clone()),
        &ctx(user()),
        RejectionCode::ScheduleExists,
    );
    then_rejected(
        &s,
        ScheduleCommand::Enable,
        &ctx(user()),
        RejectionCode::ScheduleStateConflict,
    );
    // Another account's schedule is not there for it.
    then_rejected(
        &s,
        ScheduleCommand::Disable,
        &ctx(Principal::Account {
            account: lote::types::AccountName::new("other").unwrap(),
        }),
        RejectionCode::ScheduleNotFound,
    );
    let (events, s) = then_ok(&s, ScheduleCommand::Terminate, &ctx(user()));
    assert!(matches!(
        events[0],
        ScheduleEvent::ScheduleTerminating { .. }
    ));
    let (_, s) = then_ok(&s, ScheduleCommand::Complete, &ctx(system()));
    assert_eq!(s.status, ScheduleStatus::Completed);
    let (_, s) = then_ok(&s, ScheduleCommand::Delete, &ctx(user()));
    let (_, s) = then_ok(&s, ScheduleCommand::FinishDeletion, &ctx(system()));
    assert_eq!(s.status, ScheduleStatus::Deleted);
    // A deleted schedule's id can be used again.
    then_ok(&s, create(spec), &ctx(user()));
}

#[test]
fn task_dependency_rules() {
    let job: Job = given(&job_created(OnAllTasksComplete::TerminateJob));
    let t: Task = given(&[]);
    let add = |spec: lote::domain::task::TaskSpec| TaskCommand::AddTask {
        account: acme(),
        job: job_id(),
        pool: pool_id(),
        spec,
        max_task_retries: 0,
    };
    // Given a task that names itself, by id or through a range.
    let mut selfish = task_spec("7");
    selfish.depends_on.task_ids = vec![lote::types::TaskId::new("7").unwrap()];
    let r = then_rejected(
        &t,
        add(selfish),
        &ctx(user()),
        RejectionCode::DependencyCycle,
    );
    assert!(r.detail.contains("depends on itself"), "{r}");
    let mut ranged = task_spec("007");
    ranged.depends_on.ranges = vec![lote::domain::task_spec::TaskIdRange { start: 1, end: 9 }];
    then_rejected(
        &t,
        add(ranged),
        &ctx(user()),
        RejectionCode::DependencyCycle,
    );
    let mut backwards = task_spec("b");
    backwards.depends_on.ranges = vec![lote::domain::task_spec::TaskIdRange { start: 9, end: 1 }];
    then_rejected(
        &t,
        add(backwards),
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    // A dependency list too long for one task: a range is the way.
    let mut long = task_spec("long");
    long.depends_on.task_ids = (0..7_000)
        .map(|i| lote::types::TaskId::new(format!("parent-{i:05}")).unwrap())
        .collect();
    let r = then_rejected(&t, add(long), &ctx(user()), RejectionCode::InvalidValue);
    assert!(r.detail.contains("--depends-on-range"), "{r}");

    // When a queued task is cancelled (a parent failed), it completes as
    // failed without an attempt; a running one cannot be cancelled.
    let (job_events, added) = task::add_task(&job, &t, &task_spec("child"), &ctx(user())).unwrap();
    assert_eq!(job_events.len(), 1);
    let queued: Task = given(&added);
    let cancel = || TaskCommand::CancelTask {
        reason: "a parent failed: p, exit code 3".into(),
    };
    let agent = ctx(Principal::Node {
        account: acme(),
        pool: pool_id(),
        node: NodeId::new("n1").unwrap(),
    });
    then_rejected(&queued, cancel(), &agent, RejectionCode::PermissionDenied);
    let (events, done) = then_ok(&queued, cancel(), &ctx(system()));
    assert!(matches!(events[0], TaskEvent::TaskCancelled { .. }));
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempt, 0);
    let result = done.last_result.clone().unwrap();
    assert_eq!(
        result.failure.as_ref().unwrap().0,
        FailureCategory::ParentFailed
    );
    assert_eq!(done.bucket(), Some(TaskBucket::Failed));
    assert_eq!(result.outcome(), lote::domain::task::Outcome::ParentFailed);
    then_rejected(
        &done,
        cancel(),
        &ctx(system()),
        RejectionCode::TaskStateConflict,
    );
    let (_, placed) = then_ok(
        &queued,
        TaskCommand::AssignTask {
            node: NodeId::new("n1").unwrap(),
        },
        &ctx(system()),
    );
    then_rejected(
        &placed,
        cancel(),
        &ctx(system()),
        RejectionCode::TaskStateConflict,
    );
}

#[test]
fn job_preparation_and_release_rules() {
    use lote::domain::job_prep::{JobPreparation, JobRelease, NodeTaskStatus};
    let prep = JobPreparation {
        command_line: lote::domain::spec::CommandLine::Shell("true".into()),
        env: vec![],
        resource_files: vec![],
        max_wall_clock_secs: None,
        retry_count_max: 0,
        wait_for_success: true,
        rerun_on_reboot_after_success: true,
    };
    let release = JobRelease {
        command_line: lote::domain::spec::CommandLine::Shell("true".into()),
        env: vec![],
        max_wall_clock_secs: 900,
    };
    let j: Job = given(&[]);
    // A release without a preparation, or longer than 15 minutes: refused.
    let create =
        |prep: Option<JobPreparation>, release: Option<JobRelease>| JobCommand::CreateJob {
            spec: lote::domain::job::JobSpec {
                preparation: prep.map(Box::new),
                release: release.map(Box::new),
                ..job_spec()
            },
        };
    let r = then_rejected(
        &j,
        create(None, Some(release.clone())),
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    assert!(r.detail.contains("preparation"), "{r}");
    let long = JobRelease {
        max_wall_clock_secs: 901,
        ..release.clone()
    };
    then_rejected(
        &j,
        create(Some(prep.clone()), Some(long)),
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    let (_, j) = then_ok(&j, create(Some(prep), Some(release)), &ctx(user()));

    // Only that node's agent (or lote) reports on it.
    let node = |n: &str| {
        ctx(Principal::Node {
            account: acme(),
            pool: pool_id(),
            node: NodeId::new(n).unwrap(),
        })
    };
    let ok = NodeTaskStatus {
        succeeded: true,
        exit_code: Some(0),
        retries: 0,
        failure: None,
    };
    let record = |n: &str| JobCommand::RecordPreparation {
        node: NodeId::new(n).unwrap(),
        status: ok.clone(),
    };
    then_rejected(
        &j,
        record("n1"),
        &node("n2"),
        RejectionCode::PermissionDenied,
    );
    then_rejected(
        &j,
        record("n1"),
        &ctx(user()),
        RejectionCode::PermissionDenied,
    );
    let (_, j) = then_ok(&j, record("n1"), &node("n1"));
    assert_eq!(j.releases_pending().len(), 1);

    // With nothing left to run, the job terminates but completes only
    // after the release on n1 ended.
    let (events, j) = then_ok(
        &j,
        JobCommand::TerminateJob {
            reason: "done".into(),
        },
        &ctx(user()),
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(j.status, JobStatus::Terminating);
    let complete = || JobCommand::CompleteJob {
        reason: "done".into(),
    };
    let r = then_rejected(&j, complete(), &ctx(system()), RejectionCode::JobNotActive);
    assert!(r.detail.contains("release task on n1"), "{r}");
    let (_, j) = then_ok(
        &j,
        JobCommand::RecordRelease {
            node: NodeId::new("n1").unwrap(),
            status: ok,
        },
        &node("n1"),
    );
    let (_, j) = then_ok(&j, complete(), &ctx(system()));
    assert_eq!(j.status, JobStatus::Completed);
}

#[test]
fn app_versions_and_rejections() {
    use lote::domain::app::{definition, App, AppCommand, AppEvent};
    let def = |version: &str| {
        Box::new(
            definition::parse(&format!(
                "name = \"zoom\"\nversion = \"{version}\"\n[[stages]]\ncommand = \"true\"\n"
            ))
            .unwrap(),
        )
    };
    let publish = |version: &str, make_default| AppCommand::Publish {
        account: acme(),
        definition: def(version),
        make_default,
    };
    let a: App = given(&[]);
    then_rejected(
        &a,
        AppCommand::SetDefault {
            version: "1".into(),
        },
        &ctx(user()),
        RejectionCode::AppNotFound,
    );
    // Another account's principal cannot publish into acme.
    let other = Principal::Account {
        account: lote::types::AccountName::new("other").unwrap(),
    };
    then_rejected(
        &a,
        publish("1", false),
        &ctx(other),
        RejectionCode::AppNotFound,
    );
    let (events, a) = then_ok(&a, publish("1", false), &ctx(user()));
    // The first version is the default.
    assert!(matches!(events[1], AppEvent::AppDefaultVersionSet { .. }));
    then_rejected(
        &a,
        publish("1", true),
        &ctx(user()),
        RejectionCode::AppVersionExists,
    );
    let (events, a) = then_ok(&a, publish("2", false), &ctx(user()));
    assert_eq!(
        events.len(),
        1,
        "a later version is not the default unless asked"
    );
    then_rejected(
        &a,
        AppCommand::SetDefault {
            version: "3".into(),
        },
        &ctx(user()),
        RejectionCode::AppNotFound,
    );
    let (_, a) = then_ok(
        &a,
        AppCommand::SetDefault {
            version: "2".into(),
        },
        &ctx(user()),
    );
    assert_eq!(a.resolve(None).unwrap().version, "2");
}

#[test]
fn a_job_takes_new_settings_while_it_runs_and_no_others() {
    use lote::domain::job::{Job, JobCommand, JobEvent, OnAllTasksComplete};
    let spec = job_spec();
    let j: Job = given(&[JobEvent::JobCreated {
        spec: spec.clone(),
        at: lote::types::Timestamp::from_micros(1),
    }]);
    let changed = lote::domain::job::JobSpec {
        priority: 500,
        max_task_retries: 3,
        on_all_tasks_complete: OnAllTasksComplete::TerminateJob,
        ..spec.clone()
    };
    let (_, j2) = then_ok(
        &j,
        JobCommand::UpdateJob {
            spec: changed.clone(),
        },
        &ctx(user()),
    );
    assert_eq!(j2.spec.as_ref().unwrap().priority, 500);
    // What a job was made with stays.
    let moved = lote::domain::job::JobSpec {
        pool: lote::types::PoolId::new("elsewhere").unwrap(),
        ..changed.clone()
    };
    then_rejected(
        &j2,
        JobCommand::UpdateJob { spec: moved },
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
    let bad = lote::domain::job::JobSpec {
        priority: 5000,
        ..changed
    };
    then_rejected(
        &j2,
        JobCommand::UpdateJob { spec: bad },
        &ctx(user()),
        RejectionCode::InvalidValue,
    );
}

#[test]
fn zz_every_decide_rejection_is_covered() {
    // Run the others first (names sort; tests in one binary share SEEN).
    account_lifecycle_and_rejections();
    pool_lifecycle_and_rejections();
    node_lifecycle_and_rejections();
    job_lifecycle_and_rejections();
    task_lifecycle_retries_requeues_and_rejections();
    request_records_are_written_once();
    schedule_lifecycle_and_rejections();
    task_dependency_rules();
    job_preparation_and_release_rules();
    app_versions_and_rejections();
    let seen: HashSet<RejectionCode> = SEEN.lock().unwrap().iter().copied().collect();
    // TooBusy comes from the actor layer's bounded conflict retries, not
    // from decide; the blob store's and the files API's codes come from
    // the server (tests/files.rs and the blob store's unit tests), and so
    // do the refusals to delete what is still in use (tests/operations.rs,
    // tests/api.rs).
    let not_decide = [
        RejectionCode::TooBusy,
        RejectionCode::BlobNotFound,
        RejectionCode::BlobChanged,
        RejectionCode::ChecksumMismatch,
        RejectionCode::StorageFull,
        RejectionCode::UploadNotFound,
        RejectionCode::ApplicationNotFound,
        RejectionCode::FileNotFound,
        RejectionCode::PoolInUse,
        RejectionCode::AccountNotEmpty,
        // A definition and a run are checked by the server before any
        // command (tests/apps.rs).
        RejectionCode::InvalidAppDefinition,
        RejectionCode::InvalidAppParameters,
    ];
    let missing: Vec<_> = RejectionCode::ALL
        .iter()
        .filter(|c| !seen.contains(c) && !not_decide.contains(c))
        .collect();
    assert!(missing.is_empty(), "no test produces {missing:?}");
}
