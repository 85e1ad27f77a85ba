//! A job's preparation and release tasks: what runs on a node before the
//! job's first task there, and on each such node when the job ends; and
//! the job's metadata.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{validate_files, CommandLine, ResourceFile, RETRY_COUNT_MAX};
use super::{ensure, validate_env, EnvVar, Rejection, RejectionCode};

/// Longest a release task may run (Azure's cap too): the job's completion
/// waits for it.
pub const RELEASE_SECS_MAX: u64 = 15 * 60;

/// Runs on a node before the job's first task there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobPreparation {
    pub command_line: CommandLine,
    pub env: Vec<EnvVar>,
    pub resource_files: Vec<ResourceFile>,
    /// Longest one try may run; none: no limit.
    pub max_wall_clock_secs: Option<u64>,
    /// Tries after the first failure.
    pub retry_count_max: u32,
    /// No task of the job starts on the node until it succeeded; a node
    /// where it failed gets none of the job's tasks.
    pub wait_for_success: bool,
    /// Run again after the node reboots even when it had succeeded.
    pub rerun_on_reboot_after_success: bool,
}

/// Runs when the job ends, on every node where its preparation ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobRelease {
    pub command_line: CommandLine,
    pub env: Vec<EnvVar>,
    /// At most [`RELEASE_SECS_MAX`].
    pub max_wall_clock_secs: u64,
}

/// How a preparation or release ended on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeTaskStatus {
    pub succeeded: bool,
    pub exit_code: Option<i32>,
    /// Tries after the first.
    pub retries: u32,
    /// Why it failed.
    pub failure: Option<String>,
}

impl JobPreparation {
    pub fn validate(&self) -> Result<(), Rejection> {
        self.command_line.validate("job preparation")?;
        validate_env("job preparation", &self.env)?;
        validate_files("job preparation", &self.resource_files, &[])?;
        ensure(
            self.retry_count_max <= RETRY_COUNT_MAX,
            RejectionCode::InvalidValue,
            || format!("job preparation retries: at most {RETRY_COUNT_MAX}"),
        )?;
        ensure(
            self.max_wall_clock_secs != Some(0),
            RejectionCode::InvalidValue,
            || "job preparation max_wall_clock_secs must be at least 1".into(),
        )
    }
}

impl JobRelease {
    pub fn validate(&self) -> Result<(), Rejection> {
        self.command_line.validate("job release")?;
        validate_env("job release", &self.env)?;
        ensure(
            (1..=RELEASE_SECS_MAX).contains(&self.max_wall_clock_secs),
            RejectionCode::InvalidValue,
            || {
                format!(
                    "a job release runs 1 to {RELEASE_SECS_MAX} seconds; {} asked",
                    self.max_wall_clock_secs
                )
            },
        )
    }
}

/// One name and value a job carries for its users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MetadataItem {
    pub name: String,
    pub value: String,
}

/// Most metadata items on a job, and their sizes.
pub const METADATA_ITEMS_MAX: usize = 64;
pub const METADATA_NAME_MAX: usize = 128;
pub const METADATA_VALUE_MAX: usize = 1024;

pub fn validate_metadata(items: &[MetadataItem]) -> Result<(), Rejection> {
    ensure(
        items.len() <= METADATA_ITEMS_MAX,
        RejectionCode::InvalidValue,
        || format!("a job has at most {METADATA_ITEMS_MAX} metadata items"),
    )?;
    for m in items {
        ensure(
            !m.name.is_empty() && m.name.len() <= METADATA_NAME_MAX,
            RejectionCode::InvalidValue,
            || {
                format!(
                    "a metadata name is 1 to {METADATA_NAME_MAX} bytes: {:?}",
                    m.name
                )
            },
        )?;
        ensure(
            m.value.len() <= METADATA_VALUE_MAX,
            RejectionCode::InvalidValue,
            || format!("metadata {} is over {METADATA_VALUE_MAX} bytes", m.name),
        )?;
    }
    Ok(())
}
