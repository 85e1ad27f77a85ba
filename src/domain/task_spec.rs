//! What a task is added with (its own file so that a job's manager task
//! can be part of a job's spec without the job depending on the task).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{
    validate_files, validate_packages, CommandLine, OutputFile, PackageRef, ResourceFile,
    RETRY_COUNT_MAX,
};
use super::{ensure, validate_env, EnvVar, Rejection, RejectionCode};
use crate::types::TaskId;

/// Most bytes of one task's spec, encoded: half an event's payload limit.
pub const TASK_SPEC_BYTES_MAX: usize = 512 * 1024;

/// Most task slots one task may ask for.
pub const TASK_SLOTS_MAX: u32 = 1024;

/// Limits on one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct TaskConstraints {
    /// Longest one attempt may run; none means no limit.
    pub max_wall_clock_secs: Option<u64>,
    /// Retries after a failed attempt; none means the job's default.
    pub max_task_retries: Option<u32>,
    /// How long the node keeps the task's files after it completes.
    pub retention_secs: Option<u64>,
}

/// Everything a task is added with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskSpec {
    pub id: TaskId,
    pub display_name: String,
    pub command_line: CommandLine,
    pub env: Vec<EnvVar>,
    pub resource_files: Vec<ResourceFile>,
    pub output_files: Vec<OutputFile>,
    pub constraints: TaskConstraints,
    /// Task slots the task occupies on its node.
    pub required_slots: u32,
    /// Unpacked on the node before the task runs; each one's directory is
    /// in `LOTE_APP_<ID>`.
    pub application_packages: Vec<PackageRef>,
    /// The tasks that must complete (and satisfy it) before it runs.
    pub depends_on: TaskDependencies,
    /// What its outcome means for its dependents and its job; none: the
    /// job's defaults.
    pub exit_conditions: Option<Box<ExitConditions>>,
}

/// Most characters of one task's parent ids together (Azure's limit too):
/// a larger fan-in is a range.
pub const DEPENDENCY_IDS_CHARS_MAX: usize = 64_000;
/// Most id ranges and most exit code entries on one task.
pub const DEPENDENCY_RANGES_MAX: usize = 1_000;
pub const EXIT_CODE_ENTRIES_MAX: usize = 1_000;

/// What a task waits for: tasks by id, and every task whose id is an
/// integer in an inclusive range (`7`, `07` and `007` are all 7). A
/// range covers the tasks that exist when the dependent is added.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TaskDependencies {
    pub task_ids: Vec<TaskId>,
    pub ranges: Vec<TaskIdRange>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskIdRange {
    pub start: u64,
    pub end: u64,
}

impl TaskIdRange {
    pub fn contains(&self, id: &str) -> bool {
        numeric_id(id).is_some_and(|n| (self.start..=self.end).contains(&n))
    }
}

/// A task id's integer value, if it is all digits (leading zeros allowed).
pub fn numeric_id(id: &str) -> Option<u64> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse().ok())
        .flatten()
}

impl TaskDependencies {
    pub fn is_empty(&self) -> bool {
        self.task_ids.is_empty() && self.ranges.is_empty()
    }

    fn validate(&self, own: &TaskId) -> Result<(), Rejection> {
        let chars: usize = self.task_ids.iter().map(|t| t.as_str().len()).sum();
        ensure(
            chars <= DEPENDENCY_IDS_CHARS_MAX,
            RejectionCode::InvalidValue,
            || {
                format!(
                    "task {own} depends on ids of {chars} characters in all; at most \
                     {DEPENDENCY_IDS_CHARS_MAX} (use --depends-on-range for a large fan-in)"
                )
            },
        )?;
        ensure(
            self.ranges.len() <= DEPENDENCY_RANGES_MAX,
            RejectionCode::InvalidValue,
            || format!("task {own} has more than {DEPENDENCY_RANGES_MAX} id ranges"),
        )?;
        for r in &self.ranges {
            ensure(r.start <= r.end, RejectionCode::InvalidValue, || {
                format!(
                    "task {own}: the range {}-{} ends before it starts",
                    r.start, r.end
                )
            })?;
        }
        let itself = self.task_ids.iter().any(|t| t == own)
            || self.ranges.iter().any(|r| r.contains(own.as_str()));
        ensure(!itself, RejectionCode::DependencyCycle, || {
            format!("task {own} depends on itself")
        })
    }
}

/// What happens to a failed parent's dependents.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum DependencyAction {
    /// They run as if it had succeeded.
    Satisfy,
    /// They wait, and never run unless a user acts (Azure's rule).
    Block,
    /// They complete at once as failed (`parent_failed`), and so do
    /// theirs: the job can finish.
    Cancel,
}

/// What a task's outcome does to its job.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    None,
    /// Disable the job, queueing its running tasks again.
    Disable,
    /// Terminate the job ("task failed: ...").
    Terminate,
}

/// What one outcome means; an unset field takes its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ExitOptions {
    pub job_action: Option<JobAction>,
    pub dependency_action: Option<DependencyAction>,
    /// `false`: a failure this matches is permanent and not retried
    /// (Batch Apps' third outcome, which Azure Batch lacks); none or
    /// `true`: retried while the task has retries left.
    pub retry: Option<bool>,
}

/// Outcomes mapped to actions, Azure's shape: an exact exit code first,
/// then a range, then the kind of failure, then the default (which never
/// covers exit code 0).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ExitConditions {
    pub exit_codes: Vec<(i32, ExitOptions)>,
    /// Inclusive ranges.
    pub exit_code_ranges: Vec<(i32, i32, ExitOptions)>,
    /// An input file or package could not be fetched, or the command could
    /// not be started.
    pub pre_processing_error: Option<ExitOptions>,
    /// An output file could not be uploaded (an exit code entry that
    /// matches wins).
    pub file_upload_error: Option<ExitOptions>,
    pub default: Option<ExitOptions>,
}

impl ExitConditions {
    fn validate(&self, own: &TaskId) -> Result<(), Rejection> {
        ensure(
            self.exit_codes.len() + self.exit_code_ranges.len() <= EXIT_CODE_ENTRIES_MAX,
            RejectionCode::InvalidValue,
            || format!("task {own} has more than {EXIT_CODE_ENTRIES_MAX} exit code entries"),
        )?;
        for (start, end, _) in &self.exit_code_ranges {
            ensure(start <= end, RejectionCode::InvalidValue, || {
                format!("task {own}: the exit code range {start}-{end} ends before it starts")
            })?;
        }
        Ok(())
    }
}

impl TaskSpec {
    /// A task of one slot with no files, environment or limits.
    pub fn simple(id: TaskId, command_line: CommandLine) -> Self {
        TaskSpec {
            id,
            display_name: String::new(),
            command_line,
            env: vec![],
            resource_files: vec![],
            output_files: vec![],
            constraints: TaskConstraints::default(),
            required_slots: 1,
            application_packages: vec![],
            depends_on: TaskDependencies::default(),
            exit_conditions: None,
        }
    }

    pub fn validate(&self) -> Result<(), Rejection> {
        super::validate_display_name(&self.display_name)?;
        self.command_line.validate("task")?;
        validate_env("task", &self.env)?;
        validate_files("task", &self.resource_files, &self.output_files)?;
        validate_packages("task", &self.application_packages)?;
        self.depends_on.validate(&self.id)?;
        if let Some(e) = &self.exit_conditions {
            e.validate(&self.id)?;
        }
        // Whatever is in it, a spec must fit its TaskAdded event with room
        // to spare: refused here with its size, not at the append.
        let bytes = crate::codec::encode(self).map_or(usize::MAX, |b| b.len());
        ensure(
            bytes <= TASK_SPEC_BYTES_MAX,
            RejectionCode::InvalidValue,
            || {
                format!(
                "task {} is {bytes} bytes encoded (command line, environment, files); at most {TASK_SPEC_BYTES_MAX}",
                self.id
            )
            },
        )?;
        ensure(
            (1..=TASK_SLOTS_MAX).contains(&self.required_slots),
            RejectionCode::InvalidValue,
            || {
                format!(
                    "required_slots is {}; it must be 1..={TASK_SLOTS_MAX}",
                    self.required_slots
                )
            },
        )?;
        if let Some(retries) = self.constraints.max_task_retries {
            ensure(
                retries <= RETRY_COUNT_MAX,
                RejectionCode::InvalidValue,
                || format!("max_task_retries is {retries}; at most {RETRY_COUNT_MAX}"),
            )?;
        }
        if let Some(secs) = self.constraints.max_wall_clock_secs {
            ensure(secs >= 1, RejectionCode::InvalidValue, || {
                "max_wall_clock_secs must be at least 1".into()
            })?;
        }
        Ok(())
    }
}
