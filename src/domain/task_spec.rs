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
        }
    }

    pub fn validate(&self) -> Result<(), Rejection> {
        super::validate_display_name(&self.display_name)?;
        self.command_line.validate("task")?;
        validate_env("task", &self.env)?;
        validate_files("task", &self.resource_files, &self.output_files)?;
        validate_packages("task", &self.application_packages)?;
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
