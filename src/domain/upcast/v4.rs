//! Layout 3 of tasks (4 of jobs, 2 of schedules): before apps. Exit
//! options lack `retry`, a job spec lacks `auto_pool`; a schedule's
//! template holds both.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::domain::job::{
    JobDependencies, JobEvent, JobManager, JobSpec, OnAllTasksComplete, OnTaskFailure,
};
use crate::domain::job_prep::{JobPreparation, JobRelease, MetadataItem};
use crate::domain::schedule::{Overlap, Recurrence, ScheduleSpec};
use crate::domain::spec::{CommandLine, OutputFile, PackageRef, ResourceFile};
use crate::domain::task::{TaskConstraints, TaskEvent, TaskSpec};
use crate::domain::task_spec::{
    DependencyAction, ExitConditions, ExitOptions, JobAction, TaskDependencies,
};
use crate::domain::EnvVar;
use crate::types::{AccountName, JobId, PoolId, TaskId, Timestamp};

#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct ExitOptionsV3 {
    pub job_action: Option<JobAction>,
    pub dependency_action: Option<DependencyAction>,
}

impl ExitOptionsV3 {
    fn lift(self) -> ExitOptions {
        ExitOptions {
            job_action: self.job_action,
            dependency_action: self.dependency_action,
            retry: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct ExitConditionsV3 {
    pub exit_codes: Vec<(i32, ExitOptionsV3)>,
    pub exit_code_ranges: Vec<(i32, i32, ExitOptionsV3)>,
    pub pre_processing_error: Option<ExitOptionsV3>,
    pub file_upload_error: Option<ExitOptionsV3>,
    pub default: Option<ExitOptionsV3>,
}

impl ExitConditionsV3 {
    fn lift(self) -> ExitConditions {
        ExitConditions {
            exit_codes: self
                .exit_codes
                .into_iter()
                .map(|(c, o)| (c, o.lift()))
                .collect(),
            exit_code_ranges: self
                .exit_code_ranges
                .into_iter()
                .map(|(a, b, o)| (a, b, o.lift()))
                .collect(),
            pre_processing_error: self.pre_processing_error.map(ExitOptionsV3::lift),
            file_upload_error: self.file_upload_error.map(ExitOptionsV3::lift),
            default: self.default.map(ExitOptionsV3::lift),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct TaskSpecV3 {
    pub id: TaskId,
    pub display_name: String,
    pub command_line: CommandLine,
    pub env: Vec<EnvVar>,
    pub resource_files: Vec<ResourceFile>,
    pub output_files: Vec<OutputFile>,
    pub constraints: TaskConstraints,
    pub required_slots: u32,
    pub application_packages: Vec<PackageRef>,
    pub depends_on: TaskDependencies,
    pub exit_conditions: Option<Box<ExitConditionsV3>>,
}

impl TaskSpecV3 {
    fn lift(self) -> TaskSpec {
        TaskSpec {
            id: self.id,
            display_name: self.display_name,
            command_line: self.command_line,
            env: self.env,
            resource_files: self.resource_files,
            output_files: self.output_files,
            constraints: self.constraints,
            required_slots: self.required_slots,
            application_packages: self.application_packages,
            depends_on: self.depends_on,
            exit_conditions: self.exit_conditions.map(|c| Box::new(c.lift())),
        }
    }
}

/// The fields of `TaskAdded` at layout 3.
#[derive(Serialize, Deserialize)]
pub struct TaskAddedV3 {
    pub account: AccountName,
    pub job: JobId,
    pub pool: PoolId,
    pub spec: TaskSpecV3,
    pub max_task_retries: u32,
    pub at: Timestamp,
}

pub fn task_added(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (_, old): (u32, TaskAddedV3) = codec::decode(bytes)?;
    codec::encode(&TaskEvent::TaskAdded {
        account: old.account,
        job: old.job,
        pool: old.pool,
        spec: old.spec.lift(),
        max_task_retries: old.max_task_retries,
        at: old.at,
    })
}

#[derive(Serialize, Deserialize)]
pub struct JobManagerV4 {
    pub task: TaskSpecV3,
    pub kill_job_on_completion: bool,
    pub run_exclusive: bool,
}

#[derive(Serialize, Deserialize)]
pub struct JobSpecV4 {
    pub id: JobId,
    pub account: AccountName,
    pub pool: PoolId,
    pub display_name: String,
    pub priority: i32,
    pub max_wall_clock_secs: Option<u64>,
    pub max_task_retries: u32,
    pub on_all_tasks_complete: OnAllTasksComplete,
    pub on_task_failure: OnTaskFailure,
    pub common_resource_files: Vec<ResourceFile>,
    pub job_manager: Option<Box<JobManagerV4>>,
    pub dependencies: Option<JobDependencies>,
    pub preparation: Option<Box<JobPreparation>>,
    pub release: Option<Box<JobRelease>>,
    pub common_env: Vec<EnvVar>,
    pub metadata: Vec<MetadataItem>,
}

impl JobSpecV4 {
    fn lift(self) -> JobSpec {
        JobSpec {
            id: self.id,
            account: self.account,
            pool: self.pool,
            display_name: self.display_name,
            priority: self.priority,
            max_wall_clock_secs: self.max_wall_clock_secs,
            max_task_retries: self.max_task_retries,
            on_all_tasks_complete: self.on_all_tasks_complete,
            on_task_failure: self.on_task_failure,
            common_resource_files: self.common_resource_files,
            job_manager: self.job_manager.map(|m| {
                Box::new(JobManager {
                    task: m.task.lift(),
                    kill_job_on_completion: m.kill_job_on_completion,
                    run_exclusive: m.run_exclusive,
                })
            }),
            dependencies: self.dependencies,
            preparation: self.preparation,
            release: self.release,
            common_env: self.common_env,
            metadata: self.metadata,
            auto_pool: None,
        }
    }
}

pub fn job_created(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (_, (spec, at)): (u32, (JobSpecV4, Timestamp)) = codec::decode(bytes)?;
    codec::encode(&JobEvent::JobCreated {
        spec: spec.lift(),
        at,
    })
}

#[derive(Serialize, Deserialize)]
pub struct ScheduleSpecV2 {
    pub id: JobId,
    pub account: AccountName,
    pub display_name: String,
    pub recurrence: Recurrence,
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
    pub start_window_secs: Option<u64>,
    pub overlap: Overlap,
    pub job: JobSpecV4,
    pub tasks: Vec<TaskSpecV3>,
}

/// `ScheduleCreated` and `ScheduleUpdated` share their fields (a spec and
/// a time); the variant's index is kept.
pub fn schedule_spec(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (index, (s, at)): (u32, (ScheduleSpecV2, Timestamp)) = codec::decode(bytes)?;
    codec::encode(&(
        index,
        (
            ScheduleSpec {
                id: s.id,
                account: s.account,
                display_name: s.display_name,
                recurrence: s.recurrence,
                not_before: s.not_before,
                not_after: s.not_after,
                start_window_secs: s.start_window_secs,
                overlap: s.overlap,
                job: s.job.lift(),
                tasks: s.tasks.into_iter().map(TaskSpecV3::lift).collect(),
            },
            at,
        ),
    ))
}
