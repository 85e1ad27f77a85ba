//! Job: a collection of tasks on one pool, with a priority and policies.
//!
//! A job's task counts change with its tasks. Each task transition appends
//! `JobTaskCountsChanged` to the job's stream in the same atomic write as the
//! task's own events (see `ARCHITECTURE.md`, "cross-entity commands"), with
//! no expected version: count changes commute, so concurrent task updates of
//! one job never conflict with each other.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{authorize_account, RETRY_COUNT_MAX};
use super::{
    ensure, validate_display_name, Aggregate, Ctx, DomainEvent, Map, Rejection, RejectionCode,
};
use crate::store::StreamKind;
use crate::types::{AccountName, JobId, PoolId, Principal, TaskId, Timestamp};

/// Job priorities range over -1000..=1000, as in Azure Batch; higher first.
pub const JOB_PRIORITY_MIN: i32 = -1000;
pub const JOB_PRIORITY_MAX: i32 = 1000;

/// What happens when every task of the job has completed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum OnAllTasksComplete {
    /// The job stays active; more tasks may be added.
    #[default]
    NoAction,
    /// The job completes.
    TerminateJob,
}

/// What happens when a task fails for good (no retries left).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum OnTaskFailure {
    #[default]
    NoAction,
    TerminateJob,
    /// Each failed task's exit conditions say (default: terminate; added
    /// last so recorded values keep their encoding).
    PerformExitOptionsJobAction,
}

/// What happens to running tasks when a job is disabled.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum DisableTasks {
    /// Kill them and queue them again.
    Requeue,
    /// Kill them and fail them.
    Terminate,
    /// Let them finish; start no new ones.
    #[default]
    Wait,
}

/// Everything a job is created with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobSpec {
    pub id: JobId,
    pub account: AccountName,
    pub pool: PoolId,
    pub display_name: String,
    pub priority: i32,
    /// Longest the whole job may run before it is terminated.
    pub max_wall_clock_secs: Option<u64>,
    /// Default retries for its tasks.
    pub max_task_retries: u32,
    pub on_all_tasks_complete: OnAllTasksComplete,
    pub on_task_failure: OnTaskFailure,
    /// Fetched into every task's working directory before the task's own.
    pub common_resource_files: Vec<crate::domain::spec::ResourceFile>,
    /// A task created with the job, placed before its others, that may
    /// add tasks to its own job (a job that splits itself).
    pub job_manager: Option<Box<JobManager>>,
    /// Its tasks may depend on each other; none: a task with parents is
    /// refused.
    pub dependencies: Option<JobDependencies>,
    /// Runs on each node before the job's first task there.
    pub preparation: Option<Box<super::job_prep::JobPreparation>>,
    /// Runs on each node where the preparation ran, when the job ends;
    /// the job completes after every one ended.
    pub release: Option<Box<super::job_prep::JobRelease>>,
    /// Variables every task of the job gets (a task's own win).
    pub common_env: Vec<super::EnvVar>,
    /// Name and value pairs for the job's users; lote does not read them.
    pub metadata: Vec<super::job_prep::MetadataItem>,
    /// A pool made for this job alone (Azure's auto pool): created with
    /// the job, under the job's id, and deleted when the job ends unless
    /// `keep_alive`.
    pub auto_pool: Option<Box<AutoPool>>,
}

/// The pool a job makes for itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AutoPool {
    /// Its id and account are the job's.
    pub pool: super::pool::PoolSpec,
    /// Keep the pool after the job ends (delete it by hand).
    pub keep_alive: bool,
}

/// A job's task dependency settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobDependencies {
    /// What a failed parent does to its dependents when its own exit
    /// conditions do not say.
    pub on_failed_parent: super::task_spec::DependencyAction,
}

/// A job's manager task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobManager {
    pub task: super::task_spec::TaskSpec,
    /// When it completes (success or failure for good), the job completes
    /// and its other tasks are terminated ("job manager complete").
    pub kill_job_on_completion: bool,
    /// Nothing else runs on its node while it runs (it takes every slot).
    pub run_exclusive: bool,
}

impl JobSpec {
    /// The job manager's task as added: taking every slot of its node
    /// (`node_slots`) when it runs exclusive.
    pub fn manager_task(&self, node_slots: u32) -> Option<super::task_spec::TaskSpec> {
        self.job_manager.as_ref().map(|m| {
            let mut task = m.task.clone();
            if m.run_exclusive {
                task.required_slots = node_slots.max(1);
            }
            task
        })
    }

    /// Points an auto pool at this job: the pool takes the job's id and
    /// account (the job runs on it).
    pub fn bind_auto_pool(&mut self) {
        if let Some(auto) = self.auto_pool.as_mut() {
            if let Ok(pool) = crate::types::PoolId::new(self.id.as_str()) {
                self.pool = pool;
            }
            auto.pool.id = self.pool.clone();
            auto.pool.account = self.account.clone();
        }
    }

    /// A job on `pool` with default priority, no retries and no automatic
    /// completion; change fields with struct update syntax.
    pub fn on_pool(id: JobId, account: AccountName, pool: PoolId) -> Self {
        JobSpec {
            id,
            account,
            pool,
            display_name: String::new(),
            priority: 0,
            max_wall_clock_secs: None,
            max_task_retries: 0,
            on_all_tasks_complete: OnAllTasksComplete::NoAction,
            on_task_failure: OnTaskFailure::NoAction,
            common_resource_files: vec![],
            job_manager: None,
            dependencies: None,
            preparation: None,
            release: None,
            common_env: vec![],
            metadata: vec![],
            auto_pool: None,
        }
    }

    pub fn validate(&self) -> Result<(), Rejection> {
        validate_display_name(&self.display_name)?;
        ensure(
            (JOB_PRIORITY_MIN..=JOB_PRIORITY_MAX).contains(&self.priority),
            RejectionCode::InvalidValue,
            || {
                format!(
                    "priority {} is outside {JOB_PRIORITY_MIN}..={JOB_PRIORITY_MAX}",
                    self.priority
                )
            },
        )?;
        ensure(
            self.max_task_retries <= RETRY_COUNT_MAX,
            RejectionCode::InvalidValue,
            || {
                format!(
                    "max_task_retries is {}; at most {RETRY_COUNT_MAX}",
                    self.max_task_retries
                )
            },
        )?;
        if let Some(secs) = self.max_wall_clock_secs {
            ensure(secs >= 1, RejectionCode::InvalidValue, || {
                "max_wall_clock_secs must be at least 1".into()
            })?;
        }
        if let Some(jm) = &self.job_manager {
            jm.task.validate()?;
            ensure(
                jm.task.depends_on.is_empty(),
                RejectionCode::InvalidValue,
                || "a job manager runs first: it cannot depend on other tasks".into(),
            )?;
        }
        super::validate_env("job", &self.common_env)?;
        super::job_prep::validate_metadata(&self.metadata)?;
        if let Some(p) = &self.preparation {
            p.validate()?;
        }
        if let Some(r) = &self.release {
            r.validate()?;
            ensure(
                self.preparation.is_some(),
                RejectionCode::InvalidValue,
                || "a job release runs where the preparation ran: give a preparation too".into(),
            )?;
        }
        if let Some(auto) = &self.auto_pool {
            ensure(
                auto.pool.id.as_str() == self.pool.as_str()
                    && auto.pool.id.as_str() == self.id.as_str()
                    && auto.pool.account == self.account,
                RejectionCode::InvalidValue,
                || "an auto pool takes its job's id and runs that job".into(),
            )?;
            auto.pool.validate()?;
        }
        crate::domain::spec::validate_files("job common", &self.common_resource_files, &[])
    }
}

/// One reason a queued task waits (see `compute::explain` for the words).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Its job is disabled: queued tasks are held.
    JobDisabled,
    /// The pool has no node at all.
    NoNodes,
    /// Nodes exist but none takes work now.
    NodesNotReady {
        starting: u32,
        waiting_for_start_task: u32,
        start_task_failed: u32,
        offline: u32,
        unusable: u32,
        rebooting: u32,
        leaving: u32,
    },
    /// The start task failed on every node of the pool.
    StartTaskFailedEverywhere { nodes: u32 },
    /// It needs more slots than any working node has.
    TooFewSlots { needs: u32, largest: u32 },
    /// Every working node is too full for it.
    NodesFull {
        nodes: u32,
        used: u32,
        slots: u32,
        /// Most free slots on one node.
        most_free: u32,
        needs: u32,
    },
    /// Tasks of higher-priority jobs wait ahead of it.
    HigherPriorityAhead { tasks: u64 },
    /// Tasks of its priority submitted earlier wait ahead of it.
    EarlierAhead { tasks: u64 },
    /// Some of the pool's nodes take no work now, so fewer than all carry
    /// its tasks; the reasons after this one are about the others. (Added
    /// last: recorded reasons keep their encoding.)
    SomeNodesNotWorking {
        /// Nodes that take no work.
        nodes: u32,
        /// Nodes in the pool.
        of: u32,
        starting: u32,
        waiting_for_start_task: u32,
        start_task_failed: u32,
        offline: u32,
        unusable: u32,
        rebooting: u32,
        leaving: u32,
    },
    /// It waits for tasks it depends on: how many of how many, the first
    /// few named with their state ("running on node-1").
    WaitsForParents {
        waiting: u32,
        of: u32,
        first: Vec<(String, String)>,
    },
    /// A parent failed and the policy is block: it never runs unless a
    /// user acts.
    BlockedByParent { parent: String, outcome: String },
    /// A parent failed and the policy is cancel: it is being cancelled.
    CancelledByParent { parent: String, outcome: String },
    /// A job's tasks held for their parents, `blocked` of them by a failed
    /// one for good (the group form of the three above).
    HeldByParents { blocked: u64 },
    /// The job's preparation failed on `nodes` of the pool's `of` nodes,
    /// which take none of its tasks.
    PreparationFailed { nodes: u32, of: u32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum JobCommand {
    CreateJob {
        spec: JobSpec,
    },
    /// The job's settings that may change while it runs: priority,
    /// limits, retries, what its tasks' ending and failures do, metadata.
    UpdateJob {
        spec: JobSpec,
    },
    DisableJob {
        disable_tasks: DisableTasks,
    },
    EnableJob,
    TerminateJob {
        reason: String,
    },
    /// Sent by the job supervisor when nothing more can run (all tasks
    /// done under `terminate_job`, or a terminating job drained).
    CompleteJob {
        reason: String,
    },
    DeleteJob,
    /// A node's agent: the job's preparation ended there (for good).
    RecordPreparation {
        node: crate::types::NodeId,
        status: super::job_prep::NodeTaskStatus,
    },
    /// A node's agent (or the job supervisor for a node that is gone):
    /// the job's release ended there.
    RecordRelease {
        node: crate::types::NodeId,
        status: super::job_prep::NodeTaskStatus,
    },
    /// Sent by the wait recorder when the reasons a group of the job's
    /// queued tasks wait change.
    RecordWaiting {
        slots: u32,
        tasks: u64,
        reasons: Vec<WaitReason>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum JobEvent {
    JobCreated {
        spec: JobSpec,
        at: Timestamp,
    },
    JobDisabled {
        disable_tasks: DisableTasks,
        at: Timestamp,
    },
    JobEnabled {
        at: Timestamp,
    },
    JobTerminating {
        reason: String,
        at: Timestamp,
    },
    JobCompleted {
        reason: String,
        at: Timestamp,
    },
    JobDeleted {
        at: Timestamp,
    },
    JobTaskAdded {
        task: TaskId,
        at: Timestamp,
    },
    /// A task moved between count buckets (none: absent or deleted).
    JobTaskCountsChanged {
        task: TaskId,
        from: Option<TaskBucket>,
        to: Option<TaskBucket>,
    },
    /// The job's queued tasks needing `slots` slots now wait for these
    /// reasons (none: they no longer wait). Recorded when the set changes.
    JobTasksWaiting {
        slots: u32,
        tasks: u64,
        reasons: Vec<WaitReason>,
        at: Timestamp,
    },
    /// The job's preparation ended on a node (added last, as is the next).
    JobPreparationEnded {
        node: crate::types::NodeId,
        status: super::job_prep::NodeTaskStatus,
        at: Timestamp,
    },
    JobReleaseEnded {
        node: crate::types::NodeId,
        status: super::job_prep::NodeTaskStatus,
        at: Timestamp,
    },
    /// New settings (see `JobCommand::UpdateJob`; added last, as the
    /// two before it).
    JobUpdated {
        spec: JobSpec,
        at: Timestamp,
    },
}

impl DomainEvent for JobEvent {
    const KIND: crate::store::StreamKind = crate::store::StreamKind::Job;
    fn event_type(&self) -> &'static str {
        match self {
            JobEvent::JobCreated { .. } => "JobCreated",
            JobEvent::JobDisabled { .. } => "JobDisabled",
            JobEvent::JobEnabled { .. } => "JobEnabled",
            JobEvent::JobTerminating { .. } => "JobTerminating",
            JobEvent::JobCompleted { .. } => "JobCompleted",
            JobEvent::JobDeleted { .. } => "JobDeleted",
            JobEvent::JobTaskAdded { .. } => "JobTaskAdded",
            JobEvent::JobTaskCountsChanged { .. } => "JobTaskCountsChanged",
            JobEvent::JobTasksWaiting { .. } => "JobTasksWaiting",
            JobEvent::JobPreparationEnded { .. } => "JobPreparationEnded",
            JobEvent::JobReleaseEnded { .. } => "JobReleaseEnded",
            JobEvent::JobUpdated { .. } => "JobUpdated",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    #[default]
    Absent,
    Active,
    Disabled,
    Terminating,
    Completed,
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    pub status: JobStatus,
    pub spec: Option<JobSpec>,
    /// Tasks per bucket; a bucket with no tasks is absent.
    pub task_counts: Map<TaskBucket, u64>,
    pub tasks_added: u64,
    pub disable_tasks: Option<DisableTasks>,
    pub completion_reason: Option<String>,
    pub created_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    /// Per node where it ran: how the preparation ended, and the release.
    pub preparations:
        std::collections::BTreeMap<crate::types::NodeId, super::job_prep::NodeTaskStatus>,
    pub releases: std::collections::BTreeMap<crate::types::NodeId, super::job_prep::NodeTaskStatus>,
}

impl Job {
    /// A preparation or release report: from the agent of that node of the
    /// job's pool, or lote itself (a node that is gone).
    fn allow_node_report(&self, node: &crate::types::NodeId, ctx: &Ctx) -> Result<(), Rejection> {
        let spec = match (&self.status, &self.spec) {
            (JobStatus::Absent, _) | (_, None) => {
                return Err(Rejection::new(RejectionCode::JobNotFound, "no such job"))
            }
            (_, Some(spec)) => spec,
        };
        let allowed = match &ctx.principal {
            Principal::Node {
                account,
                pool,
                node: n,
            } => account == &spec.account && pool == &spec.pool && n == node,
            Principal::System { .. } | Principal::Admin => true,
            _ => false,
        };
        ensure(allowed, RejectionCode::PermissionDenied, || {
            format!(
                "only node {node} of pool {} reports on its own job tasks",
                spec.pool
            )
        })
    }

    /// Nodes whose release has yet to run (the job completes after).
    pub fn releases_pending(&self) -> Vec<&crate::types::NodeId> {
        if self.spec.as_ref().is_none_or(|s| s.release.is_none()) {
            return Vec::new();
        }
        self.preparations
            .keys()
            .filter(|n| !self.releases.contains_key(*n))
            .collect()
    }

    pub fn count(&self, bucket: TaskBucket) -> u64 {
        self.task_counts.get(&bucket).copied().unwrap_or(0)
    }

    /// Tasks that may still run (queued or on a node).
    pub fn unfinished(&self) -> u64 {
        self.count(TaskBucket::Active) + self.count(TaskBucket::Running)
    }

    pub(super) fn live(&self, ctx: &Ctx) -> Result<&JobSpec, Rejection> {
        match (&self.status, &self.spec) {
            (JobStatus::Absent | JobStatus::Deleted, _) | (_, None) => {
                Err(Rejection::new(RejectionCode::JobNotFound, "no such job"))
            }
            (_, Some(spec)) => {
                authorize_account(&ctx.principal, &spec.account, RejectionCode::JobNotFound)?;
                ensure(
                    !matches!(ctx.principal, Principal::Node { .. }),
                    RejectionCode::PermissionDenied,
                    || "an agent may not manage jobs".into(),
                )?;
                Ok(spec)
            }
        }
    }

    /// New settings: only those that may change while the job runs.
    fn decide_update(&self, spec: &JobSpec, ctx: &Ctx) -> Result<Vec<JobEvent>, Rejection> {
        let at = ctx.now;
        let old = self.live(ctx)?;
        self.refuse_finished(old)?;
        let fixed = JobSpec {
            priority: old.priority,
            max_wall_clock_secs: old.max_wall_clock_secs,
            max_task_retries: old.max_task_retries,
            on_all_tasks_complete: old.on_all_tasks_complete,
            on_task_failure: old.on_task_failure,
            metadata: old.metadata.clone(),
            ..spec.clone()
        };
        ensure(fixed == *old, RejectionCode::InvalidValue, || {
            format!(
                "job {}: only its priority, wall-clock limit, task retries, --on-all-tasks-complete, --on-task-failure and metadata change after it is created",
                old.id
            )
        })?;
        spec.validate()?;
        Ok(vec![JobEvent::JobUpdated {
            spec: spec.clone(),
            at,
        }])
    }

    pub(super) fn refuse_finished(&self, spec: &JobSpec) -> Result<(), Rejection> {
        match self.status {
            JobStatus::Completed => Err(Rejection::new(
                RejectionCode::JobCompleted,
                format!("job {} has completed", spec.id),
            )),
            JobStatus::Terminating => Err(Rejection::new(
                RejectionCode::JobBeingTerminated,
                format!("job {} is terminating", spec.id),
            )),
            _ => Ok(()),
        }
    }

    /// Whether the job may complete now, and why.
    pub fn completion_due(&self) -> Option<String> {
        let spec = self.spec.as_ref()?;
        match self.status {
            JobStatus::Terminating if self.unfinished() == 0 => Some(
                self.completion_reason
                    .clone()
                    .unwrap_or_else(|| "terminated".into()),
            ),
            JobStatus::Active
                if spec.on_all_tasks_complete == OnAllTasksComplete::TerminateJob
                    && self.tasks_added > 0
                    && self.unfinished() == 0 =>
            {
                Some("all tasks completed".into())
            }
            _ => None,
        }
    }
}

impl Aggregate for Job {
    type Command = JobCommand;
    type Event = JobEvent;
    const KIND: StreamKind = StreamKind::Job;
    const STATE_SCHEMA: u32 = 3;

    fn decide(&self, command: &JobCommand, ctx: &Ctx) -> Result<Vec<JobEvent>, Rejection> {
        let at = ctx.now;
        match command {
            JobCommand::CreateJob { spec } => {
                authorize_account(
                    &ctx.principal,
                    &spec.account,
                    RejectionCode::PermissionDenied,
                )?;
                ensure(
                    matches!(self.status, JobStatus::Absent | JobStatus::Deleted),
                    RejectionCode::JobExists,
                    || format!("job {} exists in account {}", spec.id, spec.account),
                )?;
                spec.validate()?;
                Ok(vec![JobEvent::JobCreated {
                    spec: spec.clone(),
                    at,
                }])
            }
            JobCommand::DisableJob { disable_tasks } => {
                let spec = self.live(ctx)?;
                self.refuse_finished(spec)?;
                ensure(
                    self.status == JobStatus::Active,
                    RejectionCode::JobNotActive,
                    || format!("job {} is already disabled", spec.id),
                )?;
                Ok(vec![JobEvent::JobDisabled {
                    disable_tasks: *disable_tasks,
                    at,
                }])
            }
            JobCommand::EnableJob => {
                let spec = self.live(ctx)?;
                self.refuse_finished(spec)?;
                ensure(
                    self.status == JobStatus::Disabled,
                    RejectionCode::JobNotDisabled,
                    || format!("job {} is not disabled", spec.id),
                )?;
                Ok(vec![JobEvent::JobEnabled { at }])
            }
            JobCommand::TerminateJob { reason } => {
                let spec = self.live(ctx)?;
                self.refuse_finished(spec)?;
                let mut events = vec![JobEvent::JobTerminating {
                    reason: reason.clone(),
                    at,
                }];
                // With nothing left to stop it completes at once, unless
                // releases are to run first.
                if self.unfinished() == 0 && self.releases_pending().is_empty() {
                    events.push(JobEvent::JobCompleted {
                        reason: reason.clone(),
                        at,
                    });
                }
                Ok(events)
            }
            JobCommand::CompleteJob { reason } => {
                let spec = self.live(ctx)?;
                let due = self.completion_due();
                ensure(due.is_some(), RejectionCode::JobNotActive, || {
                    format!(
                        "job {} is {:?} with {} unfinished tasks; it cannot complete yet",
                        spec.id,
                        self.status,
                        self.unfinished()
                    )
                })?;
                let pending = self.releases_pending();
                if pending.is_empty() {
                    return Ok(vec![JobEvent::JobCompleted {
                        reason: reason.clone(),
                        at,
                    }]);
                }
                // Its releases run when it ends: it terminates, and
                // completes once they have.
                ensure(
                    self.status == JobStatus::Active,
                    RejectionCode::JobNotActive,
                    || {
                        let nodes: Vec<String> = pending.iter().map(|n| n.to_string()).collect();
                        format!(
                            "job {} waits for its release task on {}",
                            spec.id,
                            nodes.join(", ")
                        )
                    },
                )?;
                Ok(vec![JobEvent::JobTerminating {
                    reason: reason.clone(),
                    at,
                }])
            }
            JobCommand::RecordPreparation { node, status } => {
                self.allow_node_report(node, ctx)?;
                Ok(vec![JobEvent::JobPreparationEnded {
                    node: node.clone(),
                    status: status.clone(),
                    at,
                }])
            }
            JobCommand::RecordRelease { node, status } => {
                self.allow_node_report(node, ctx)?;
                Ok(vec![JobEvent::JobReleaseEnded {
                    node: node.clone(),
                    status: status.clone(),
                    at,
                }])
            }
            JobCommand::DeleteJob => {
                self.live(ctx)?;
                Ok(vec![JobEvent::JobDeleted { at }])
            }
            JobCommand::UpdateJob { spec } => self.decide_update(spec, ctx),
            JobCommand::RecordWaiting {
                slots,
                tasks,
                reasons,
            } => {
                self.live(ctx)?;
                Ok(vec![JobEvent::JobTasksWaiting {
                    slots: *slots,
                    tasks: *tasks,
                    reasons: reasons.clone(),
                    at,
                }])
            }
        }
    }

    fn apply(&mut self, event: &JobEvent) {
        use JobStatus as S;
        match (self.status, event) {
            (S::Absent | S::Deleted, JobEvent::JobCreated { spec, at }) => {
                *self = Job {
                    status: S::Active,
                    spec: Some(spec.clone()),
                    created_at: Some(*at),
                    ..Job::default()
                };
            }
            (S::Active, JobEvent::JobDisabled { disable_tasks, .. }) => {
                self.status = S::Disabled;
                self.disable_tasks = Some(*disable_tasks);
            }
            (S::Disabled, JobEvent::JobEnabled { .. }) => {
                self.status = S::Active;
                self.disable_tasks = None;
            }
            (S::Active | S::Disabled, JobEvent::JobTerminating { reason, .. }) => {
                self.status = S::Terminating;
                self.completion_reason = Some(reason.clone());
            }
            (S::Active | S::Terminating, JobEvent::JobCompleted { reason, at }) => {
                self.status = S::Completed;
                self.completion_reason = Some(reason.clone());
                self.completed_at = Some(*at);
            }
            (s, JobEvent::JobDeleted { .. }) if !matches!(s, S::Absent | S::Deleted) => {
                self.status = S::Deleted
            }
            (S::Active | S::Disabled, JobEvent::JobUpdated { spec, .. }) => {
                self.spec = Some(spec.clone());
            }
            (S::Active | S::Disabled, JobEvent::JobTaskAdded { .. }) => {
                self.tasks_added += 1;
                *self.task_counts.entry(TaskBucket::Active).or_insert(0) += 1;
            }
            // Tasks finish after their job stopped accepting new ones, and
            // a deleted job's tasks are deleted after it: counts follow.
            (s, JobEvent::JobTaskCountsChanged { task, from, to }) if s != S::Absent => {
                if let Some(from) = from {
                    let count = self
                        .task_counts
                        .get_mut(from)
                        .filter(|c| **c > 0)
                        .unwrap_or_else(|| {
                            panic!(
                                "job {:?}: task {task} leaves {from:?}, which counts no task",
                                self.spec.as_ref().map(|s| &s.id)
                            )
                        });
                    *count -= 1;
                    if *count == 0 {
                        self.task_counts.remove(from);
                    }
                }
                if let Some(to) = to {
                    *self.task_counts.entry(*to).or_insert(0) += 1;
                }
            }
            // History for `lote audit`; the reasons themselves are read
            // live from placement's picture.
            (s, JobEvent::JobTasksWaiting { .. }) if !matches!(s, S::Absent | S::Deleted) => {}
            // A deleted job's releases still run and are recorded.
            (s, JobEvent::JobPreparationEnded { node, status, .. }) if s != S::Absent => {
                self.preparations.insert(node.clone(), status.clone());
            }
            (s, JobEvent::JobReleaseEnded { node, status, .. }) if s != S::Absent => {
                self.releases.insert(node.clone(), status.clone());
            }
            (status, event) => panic!(
                "job {:?} in state {status:?} cannot apply {event:?}",
                self.spec.as_ref().map(|s| &s.id)
            ),
        }
    }

    fn is_finished(&self) -> bool {
        self.status == JobStatus::Deleted
    }

    fn sanity_check(&self) -> Result<(), String> {
        let counted: u64 = self.task_counts.values().sum();
        if counted > self.tasks_added {
            return Err(format!(
                "{counted} tasks counted but only {} added",
                self.tasks_added
            ));
        }
        if self.task_counts.values().any(|c| *c == 0) {
            return Err("a zero count is stored".into());
        }
        if self.status != JobStatus::Absent && self.spec.is_none() {
            return Err(format!("job in {:?} without a spec", self.status));
        }
        Ok(())
    }
}

/// How a task counts in its job's totals.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskBucket {
    Active,
    Running,
    Succeeded,
    Failed,
}
