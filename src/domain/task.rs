//! Task: one command line of a job, and every attempt to run it.
//!
//! ```text
//!  active → assigned(node, attempt) → running → completed (success | failure)
//!    ▲            │                      │            │ failure with retries left
//!    │            └──── requeued ◄───────┘            ▼
//!    └──────────────── (node lost; not a retry) ◄── retried
//!  active | assigned | running → terminated (completed, failure)   any → deleted
//! ```
//! Reports name the attempt they are about: a report for any attempt but
//! the current one is refused as stale, so exactly one attempt decides.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::job::{Job, JobEvent};
use super::spec::authorize_account;
use super::{ensure, Aggregate, Ctx, DomainEvent, Rejection, RejectionCode};
use crate::codec::CodecError;
use crate::store::{ExpectedVersion, StreamAppend, StreamId, StreamKind};
use crate::types::{AccountName, JobId, NodeId, PoolId, Principal, TaskId, Timestamp};

/// Most entries in one attempt's output manifest.
pub const OUTPUT_MANIFEST_MAX: usize = 10_000;

pub use super::task_spec::{TaskConstraints, TaskSpec, TASK_SLOTS_MAX, TASK_SPEC_BYTES_MAX};

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// The process exited with a non-zero code.
    NonZeroExit,
    /// The process was killed by a signal it did not ask for.
    Signal,
    /// It ran past its wall-clock limit and was killed.
    Timeout,
    /// It could not be started (missing executable, bad working directory).
    LaunchFailure,
    /// An input file could not be fetched.
    ResourceFile,
    /// An output file could not be uploaded.
    OutputFile,
    /// A user or the job terminated it.
    Terminated,
    /// Its processes reached the attempt's memory limit and the kernel
    /// killed one (added last: recorded categories keep their encoding).
    OutOfMemory,
    /// A task it depends on failed and the policy is to cancel: it never
    /// ran.
    ParentFailed,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    /// None when the attempt succeeded.
    pub failure: Option<(FailureCategory, String)>,
}

impl TaskResult {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    /// The outcome as exit conditions read it.
    pub fn outcome(&self) -> Outcome {
        use FailureCategory as F;
        match (&self.failure, self.exit_code) {
            (None, _) => Outcome::Succeeded,
            (Some((F::ParentFailed, _)), _) => Outcome::ParentFailed,
            (Some((F::ResourceFile | F::LaunchFailure, _)), _) => Outcome::PreProcessing,
            (Some((F::OutputFile, _)), Some(code)) => Outcome::Exited {
                code,
                upload_failed: true,
            },
            (Some((F::NonZeroExit, _)), Some(code)) => Outcome::Exited {
                code,
                upload_failed: false,
            },
            _ => Outcome::Other,
        }
    }
}

pub use super::task_deps::Outcome;

/// One output file an attempt uploaded: the manifest entry recorded with
/// its completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutputManifestEntry {
    /// Relative to the working directory (`../stdout.txt` for the output
    /// beside it).
    pub path: String,
    pub container: String,
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256, as the blob store verified it.
    pub sha256: String,
}

/// Where an attempt runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Placement {
    pub pool: PoolId,
    pub node: NodeId,
}

// Commands live for one decision; adding a task (its whole spec) is the
// common one, so boxing it would cost an allocation per task added.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum TaskCommand {
    /// Added through its job (see `add_task`); `max_task_retries` is
    /// already resolved against the job's default.
    AddTask {
        account: AccountName,
        job: JobId,
        pool: PoolId,
        spec: TaskSpec,
        max_task_retries: u32,
    },
    AssignTask {
        node: NodeId,
    },
    StartTask {
        attempt: u32,
    },
    CompleteTask {
        attempt: u32,
        result: TaskResult,
        /// Output files the agent uploaded (recorded with the completion).
        outputs: Vec<OutputManifestEntry>,
    },
    RequeueTask {
        attempt: u32,
        reason: String,
    },
    TerminateTask {
        reason: String,
    },
    /// A queued task whose parent failed under the cancel policy.
    CancelTask {
        reason: String,
    },
    DeleteTask,
}

// Events are decoded, applied and dropped; `TaskAdded` (with the spec)
// is one per task, so a box would be an allocation per task.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum TaskEvent {
    TaskAdded {
        account: AccountName,
        job: JobId,
        pool: PoolId,
        spec: TaskSpec,
        max_task_retries: u32,
        at: Timestamp,
    },
    TaskAssigned {
        placement: Placement,
        attempt: u32,
        at: Timestamp,
    },
    TaskStarted {
        attempt: u32,
        at: Timestamp,
    },
    TaskCompleted {
        attempt: u32,
        result: TaskResult,
        at: Timestamp,
    },
    /// A failed attempt with retries left: back to the queue.
    TaskRetried {
        retry_count: u32,
        at: Timestamp,
    },
    /// Its node was lost or removed: back to the queue, no retry used.
    TaskRequeued {
        attempt: u32,
        reason: String,
        at: Timestamp,
    },
    TaskTerminated {
        reason: String,
        at: Timestamp,
    },
    TaskDeleted {
        at: Timestamp,
    },
    /// The output files an attempt uploaded, recorded in the same append as
    /// its `TaskCompleted` (just before it).
    TaskOutputsUploaded {
        attempt: u32,
        files: Vec<OutputManifestEntry>,
        at: Timestamp,
    },
    /// It will never run: a parent failed and the policy is to cancel
    /// (completes as failed, `parent_failed`).
    TaskCancelled {
        reason: String,
        at: Timestamp,
    },
}

impl DomainEvent for TaskEvent {
    const KIND: crate::store::StreamKind = crate::store::StreamKind::Task;
    fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::TaskAdded { .. } => "TaskAdded",
            TaskEvent::TaskAssigned { .. } => "TaskAssigned",
            TaskEvent::TaskStarted { .. } => "TaskStarted",
            TaskEvent::TaskCompleted { .. } => "TaskCompleted",
            TaskEvent::TaskRetried { .. } => "TaskRetried",
            TaskEvent::TaskRequeued { .. } => "TaskRequeued",
            TaskEvent::TaskTerminated { .. } => "TaskTerminated",
            TaskEvent::TaskDeleted { .. } => "TaskDeleted",
            TaskEvent::TaskOutputsUploaded { .. } => "TaskOutputsUploaded",
            TaskEvent::TaskCancelled { .. } => "TaskCancelled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    #[default]
    Absent,
    /// Queued, waiting for a node.
    Active,
    /// Placed on a node; the agent has not started the process yet.
    Assigned,
    Running,
    Completed,
    Deleted,
}

pub use super::job::TaskBucket;

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub status: TaskStatus,
    pub account: Option<AccountName>,
    pub job: Option<JobId>,
    pub pool: Option<PoolId>,
    // Never changed after the add: shared, so that the state's copies (an
    // actor's outcome, each read) do not copy the spec.
    pub spec: Option<std::sync::Arc<TaskSpec>>,
    pub max_task_retries: u32,
    /// Attempts started so far, counting requeued ones; the current one.
    pub attempt: u32,
    pub retry_count: u32,
    pub requeue_count: u32,
    pub placement: Option<Placement>,
    pub last_result: Option<TaskResult>,
    /// The output files the deciding attempt uploaded.
    pub outputs: Vec<OutputManifestEntry>,
    pub added_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

impl Task {
    /// The task's bucket in its job's counts (none if absent or deleted).
    pub fn bucket(&self) -> Option<TaskBucket> {
        match self.status {
            TaskStatus::Absent | TaskStatus::Deleted => None,
            TaskStatus::Active => Some(TaskBucket::Active),
            TaskStatus::Assigned | TaskStatus::Running => Some(TaskBucket::Running),
            TaskStatus::Completed => Some(match &self.last_result {
                Some(r) if r.succeeded() => TaskBucket::Succeeded,
                _ => TaskBucket::Failed,
            }),
        }
    }

    fn id(&self) -> &str {
        self.spec.as_ref().map(|s| s.id.as_str()).unwrap_or("?")
    }

    fn require_attempt(&self, attempt: u32, ctx: &Ctx) -> Result<(), Rejection> {
        ensure(
            attempt == self.attempt
                && matches!(self.status, TaskStatus::Assigned | TaskStatus::Running),
            RejectionCode::StaleAttempt,
            || {
                format!(
                    "task {} is {:?} at attempt {}; the report is for attempt {attempt}",
                    self.id(),
                    self.status,
                    self.attempt
                )
            },
        )?;
        // An agent may report only on attempts placed on its own node.
        if let Principal::Node { node, .. } = &ctx.principal {
            let placed = self.placement.as_ref().map(|p| &p.node);
            ensure(
                placed == Some(node),
                RejectionCode::PermissionDenied,
                || {
                    format!(
                        "task {} attempt {attempt} is not placed on node {node}",
                        self.id()
                    )
                },
            )?;
        }
        Ok(())
    }

    /// A queued task whose parent failed under the cancel policy ends
    /// without running.
    fn cancel(&self, reason: &str, ctx: &Ctx) -> Result<Vec<TaskEvent>, Rejection> {
        forbid_agents(ctx, "cancel tasks")?;
        ensure(
            self.status == TaskStatus::Active,
            RejectionCode::TaskStateConflict,
            || {
                format!(
                    "task {} is {:?}; only a queued task is cancelled",
                    self.id(),
                    self.status
                )
            },
        )?;
        Ok(vec![TaskEvent::TaskCancelled {
            reason: reason.to_string(),
            at: ctx.now,
        }])
    }

    fn terminal_rejection(&self) -> Rejection {
        if self.status == TaskStatus::Completed {
            Rejection::new(
                RejectionCode::TaskCompleted,
                format!("task {} has completed", self.id()),
            )
        } else {
            Rejection::new(RejectionCode::TaskNotFound, "no such task")
        }
    }
}

fn forbid_agents(ctx: &Ctx, what: &str) -> Result<(), Rejection> {
    ensure(
        !matches!(ctx.principal, Principal::Node { .. }),
        RejectionCode::PermissionDenied,
        || format!("an agent may not {what}"),
    )
}

impl Aggregate for Task {
    type Command = TaskCommand;
    type Event = TaskEvent;
    const KIND: StreamKind = StreamKind::Task;
    const STATE_SCHEMA: u32 = 3;

    fn decide(&self, command: &TaskCommand, ctx: &Ctx) -> Result<Vec<TaskEvent>, Rejection> {
        let at = ctx.now;
        if let TaskCommand::AddTask {
            account,
            job,
            pool,
            spec,
            max_task_retries,
        } = command
        {
            authorize_account(&ctx.principal, account, RejectionCode::PermissionDenied)?;
            forbid_agents(ctx, "add tasks")?;
            ensure(
                matches!(self.status, TaskStatus::Absent | TaskStatus::Deleted),
                RejectionCode::TaskExists,
                || format!("task {} exists in job {job}", spec.id),
            )?;
            spec.validate()?;
            return Ok(vec![TaskEvent::TaskAdded {
                account: account.clone(),
                job: job.clone(),
                pool: pool.clone(),
                spec: spec.clone(),
                max_task_retries: *max_task_retries,
                at,
            }]);
        }
        let account = match (&self.status, &self.account) {
            (TaskStatus::Absent | TaskStatus::Deleted, _) | (_, None) => {
                return Err(Rejection::new(RejectionCode::TaskNotFound, "no such task"))
            }
            (_, Some(account)) => account,
        };
        authorize_account(&ctx.principal, account, RejectionCode::TaskNotFound)?;
        match command {
            TaskCommand::AddTask { .. } => unreachable!("handled above"),
            TaskCommand::AssignTask { node } => {
                forbid_agents(ctx, "place tasks")?;
                ensure(
                    self.status == TaskStatus::Active,
                    RejectionCode::TaskStateConflict,
                    || {
                        format!(
                            "task {} is {:?}; only queued tasks can be placed",
                            self.id(),
                            self.status
                        )
                    },
                )?;
                let pool = self.pool.clone().expect("a live task has a pool");
                Ok(vec![TaskEvent::TaskAssigned {
                    placement: Placement {
                        pool,
                        node: node.clone(),
                    },
                    attempt: self.attempt + 1,
                    at,
                }])
            }
            TaskCommand::StartTask { attempt } => {
                self.require_attempt(*attempt, ctx)?;
                ensure(
                    self.status == TaskStatus::Assigned,
                    RejectionCode::TaskStateConflict,
                    || format!("task {} attempt {attempt} has already started", self.id()),
                )?;
                Ok(vec![TaskEvent::TaskStarted {
                    attempt: *attempt,
                    at,
                }])
            }
            TaskCommand::CompleteTask {
                attempt,
                result,
                outputs,
            } => {
                self.require_attempt(*attempt, ctx)?;
                ensure(
                    outputs.len() <= OUTPUT_MANIFEST_MAX,
                    RejectionCode::InvalidValue,
                    || format!("more than {OUTPUT_MANIFEST_MAX} output files in one manifest"),
                )?;
                let mut events = Vec::with_capacity(3);
                if !outputs.is_empty() {
                    events.push(TaskEvent::TaskOutputsUploaded {
                        attempt: *attempt,
                        files: outputs.clone(),
                        at,
                    });
                }
                events.push(TaskEvent::TaskCompleted {
                    attempt: *attempt,
                    result: result.clone(),
                    at,
                });
                // A launch failure (missing executable, bad directory) would
                // fail the same way again: not retried.
                let launch_failed =
                    matches!(result.failure, Some((FailureCategory::LaunchFailure, _)));
                // An exit condition may call the failure permanent.
                let conditions = self
                    .spec
                    .as_ref()
                    .and_then(|s| s.exit_conditions.as_deref());
                let retryable = super::task_deps::retry_allowed(conditions, result.outcome());
                if !result.succeeded()
                    && !launch_failed
                    && retryable
                    && self.retry_count < self.max_task_retries
                {
                    events.push(TaskEvent::TaskRetried {
                        retry_count: self.retry_count + 1,
                        at,
                    });
                }
                Ok(events)
            }
            TaskCommand::RequeueTask { attempt, reason } => {
                forbid_agents(ctx, "requeue tasks")?;
                self.require_attempt(*attempt, ctx)?;
                Ok(vec![TaskEvent::TaskRequeued {
                    attempt: *attempt,
                    reason: reason.clone(),
                    at,
                }])
            }
            TaskCommand::TerminateTask { reason } => {
                forbid_agents(ctx, "terminate tasks")?;
                ensure(
                    matches!(
                        self.status,
                        TaskStatus::Active | TaskStatus::Assigned | TaskStatus::Running
                    ),
                    RejectionCode::TaskCompleted,
                    || self.terminal_rejection().detail,
                )?;
                Ok(vec![TaskEvent::TaskTerminated {
                    reason: reason.clone(),
                    at,
                }])
            }
            TaskCommand::CancelTask { reason } => self.cancel(reason, ctx),
            TaskCommand::DeleteTask => {
                forbid_agents(ctx, "delete tasks")?;
                Ok(vec![TaskEvent::TaskDeleted { at }])
            }
        }
    }

    fn apply(&mut self, event: &TaskEvent) {
        use TaskStatus as S;
        match (self.status, event) {
            (
                S::Absent | S::Deleted,
                TaskEvent::TaskAdded {
                    account,
                    job,
                    pool,
                    spec,
                    max_task_retries,
                    at,
                },
            ) => {
                *self = Task {
                    status: S::Active,
                    account: Some(account.clone()),
                    job: Some(job.clone()),
                    pool: Some(pool.clone()),
                    spec: Some(std::sync::Arc::new(spec.clone())),
                    max_task_retries: *max_task_retries,
                    added_at: Some(*at),
                    ..Task::default()
                };
            }
            (
                S::Active,
                TaskEvent::TaskAssigned {
                    placement, attempt, ..
                },
            ) if *attempt == self.attempt + 1 => {
                self.status = S::Assigned;
                self.attempt = *attempt;
                self.placement = Some(placement.clone());
                self.outputs.clear();
            }
            (S::Assigned | S::Running, TaskEvent::TaskOutputsUploaded { attempt, files, .. })
                if *attempt == self.attempt =>
            {
                self.outputs = files.clone();
            }
            (S::Assigned, TaskEvent::TaskStarted { attempt, at }) if *attempt == self.attempt => {
                self.status = S::Running;
                self.started_at = Some(*at);
            }
            (
                S::Assigned | S::Running,
                TaskEvent::TaskCompleted {
                    attempt,
                    result,
                    at,
                },
            ) if *attempt == self.attempt => {
                self.status = S::Completed;
                self.last_result = Some(result.clone());
                self.completed_at = Some(*at);
            }
            (S::Completed, TaskEvent::TaskRetried { retry_count, .. })
                if *retry_count == self.retry_count + 1 =>
            {
                self.status = S::Active;
                self.retry_count = *retry_count;
                self.placement = None;
                self.completed_at = None;
            }
            (S::Assigned | S::Running, TaskEvent::TaskRequeued { attempt, .. })
                if *attempt == self.attempt =>
            {
                self.status = S::Active;
                self.requeue_count += 1;
                self.placement = None;
            }
            (S::Active | S::Assigned | S::Running, TaskEvent::TaskTerminated { reason, at }) => {
                // A running attempt ran from its start to the termination;
                // one that never started ran for no time.
                let ran = match (self.status, self.started_at) {
                    (S::Running, Some(started)) => {
                        (at.as_micros() - started.as_micros()).max(0) as u64 / 1000
                    }
                    _ => 0,
                };
                self.status = S::Completed;
                self.last_result = Some(TaskResult {
                    exit_code: None,
                    signal: None,
                    duration_ms: ran,
                    failure: Some((FailureCategory::Terminated, reason.clone())),
                });
                self.completed_at = Some(*at);
            }
            (S::Active, TaskEvent::TaskCancelled { reason, at }) => {
                self.status = S::Completed;
                self.last_result = Some(TaskResult {
                    exit_code: None,
                    signal: None,
                    duration_ms: 0,
                    failure: Some((FailureCategory::ParentFailed, reason.clone())),
                });
                self.completed_at = Some(*at);
            }
            (s, TaskEvent::TaskDeleted { .. }) if s != S::Absent && s != S::Deleted => {
                self.status = S::Deleted;
                self.placement = None;
            }
            (status, event) => panic!(
                "task {} in state {status:?} (attempt {}) cannot apply {event:?}",
                self.id(),
                self.attempt
            ),
        }
    }

    fn linked_appends(before: &Self, after: &Self) -> Result<Vec<StreamAppend>, CodecError> {
        let (Some(account), Some(job), Some(spec)) = (&after.account, &after.job, &after.spec)
        else {
            return Ok(Vec::new());
        };
        match counts_change(&spec.id, before, after) {
            None => Ok(Vec::new()),
            // Count changes commute, so no expected version (see job.rs).
            Some(event) => Ok(vec![StreamAppend {
                stream: StreamId::job(account, job),
                expected: ExpectedVersion::Any,
                events: vec![super::to_new_event(&event)?],
            }]),
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self.status, TaskStatus::Completed | TaskStatus::Deleted)
    }

    fn sanity_check(&self) -> Result<(), String> {
        let placed = matches!(self.status, TaskStatus::Assigned | TaskStatus::Running);
        if placed != self.placement.is_some() && self.status != TaskStatus::Completed {
            return Err(format!(
                "task {:?} placement {:?}",
                self.status, self.placement
            ));
        }
        if self.retry_count > self.max_task_retries {
            return Err(format!(
                "retry_count {} above max {}",
                self.retry_count, self.max_task_retries
            ));
        }
        if self.retry_count + self.requeue_count > self.attempt {
            return Err(format!(
                "{} retries + {} requeues but {} attempts",
                self.retry_count, self.requeue_count, self.attempt
            ));
        }
        Ok(())
    }
}

/// Decides adding a task to a job: the job's event and the task's events,
/// to be appended in one atomic write.
pub fn add_task(
    job: &Job,
    task: &Task,
    spec: &TaskSpec,
    ctx: &Ctx,
) -> Result<(Vec<JobEvent>, Vec<TaskEvent>), Rejection> {
    let job_spec = job.live(ctx)?;
    job.refuse_finished(job_spec)?;
    let max_task_retries = spec
        .constraints
        .max_task_retries
        .unwrap_or(job_spec.max_task_retries);
    let task_events = task.decide(
        &TaskCommand::AddTask {
            account: job_spec.account.clone(),
            job: job_spec.id.clone(),
            pool: job_spec.pool.clone(),
            spec: spec.clone(),
            max_task_retries,
        },
        ctx,
    )?;
    let job_events = vec![JobEvent::JobTaskAdded {
        task: spec.id.clone(),
        at: ctx.now,
    }];
    Ok((job_events, task_events))
}

/// The job event that mirrors a task's move between buckets, if it moved.
pub fn counts_change(task: &TaskId, before: &Task, after: &Task) -> Option<JobEvent> {
    let (from, to) = (before.bucket(), after.bucket());
    (from != to).then(|| JobEvent::JobTaskCountsChanged {
        task: task.clone(),
        from,
        to,
    })
}
