//! Layout 3 of jobs (2 of tasks, 1 of schedules): before task
//! dependencies, exit conditions and preparation and release tasks. A
//! task spec lacks `depends_on` and `exit_conditions`, a job spec
//! `dependencies`, `preparation` and `release`; a schedule's template
//! holds both.

use serde::{Deserialize, Serialize};

use super::v4::{JobManagerV4, JobSpecV4, ScheduleSpecV2, TaskAddedV3, TaskSpecV3};
use crate::codec::{self, CodecError};
use crate::domain::job::{OnAllTasksComplete, OnTaskFailure};
use crate::domain::schedule::{Overlap, Recurrence};
use crate::domain::spec::{CommandLine, OutputFile, PackageRef, ResourceFile};
use crate::domain::task::TaskConstraints;
use crate::domain::task_spec::TaskDependencies;
use crate::domain::EnvVar;
use crate::types::{AccountName, JobId, PoolId, TaskId, Timestamp};

#[derive(Serialize, Deserialize)]
pub struct TaskSpecV2 {
    pub id: TaskId,
    pub display_name: String,
    pub command_line: CommandLine,
    pub env: Vec<EnvVar>,
    pub resource_files: Vec<ResourceFile>,
    pub output_files: Vec<OutputFile>,
    pub constraints: TaskConstraints,
    pub required_slots: u32,
    pub application_packages: Vec<PackageRef>,
}

impl TaskSpecV2 {
    fn lift(self) -> TaskSpecV3 {
        TaskSpecV3 {
            id: self.id,
            display_name: self.display_name,
            command_line: self.command_line,
            env: self.env,
            resource_files: self.resource_files,
            output_files: self.output_files,
            constraints: self.constraints,
            required_slots: self.required_slots,
            application_packages: self.application_packages,
            depends_on: TaskDependencies::default(),
            exit_conditions: None,
        }
    }
}

/// The fields of `TaskAdded` at layout 2.
#[derive(Serialize, Deserialize)]
pub struct TaskAddedV2 {
    pub account: AccountName,
    pub job: JobId,
    pub pool: PoolId,
    pub spec: TaskSpecV2,
    pub max_task_retries: u32,
    pub at: Timestamp,
}

pub fn task_added(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (index, old): (u32, TaskAddedV2) = codec::decode(bytes)?;
    codec::encode(&(
        index,
        TaskAddedV3 {
            account: old.account,
            job: old.job,
            pool: old.pool,
            spec: old.spec.lift(),
            max_task_retries: old.max_task_retries,
            at: old.at,
        },
    ))
}

#[derive(Serialize, Deserialize)]
pub struct JobManagerV3 {
    pub task: TaskSpecV2,
    pub kill_job_on_completion: bool,
    pub run_exclusive: bool,
}

#[derive(Serialize, Deserialize)]
pub struct JobSpecV3 {
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
    pub job_manager: Option<Box<JobManagerV3>>,
}

impl JobSpecV3 {
    fn lift(self) -> JobSpecV4 {
        JobSpecV4 {
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
                Box::new(JobManagerV4 {
                    task: m.task.lift(),
                    kill_job_on_completion: m.kill_job_on_completion,
                    run_exclusive: m.run_exclusive,
                })
            }),
            dependencies: None,
            preparation: None,
            release: None,
            common_env: vec![],
            metadata: vec![],
        }
    }
}

pub fn job_created(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (index, (spec, at)): (u32, (JobSpecV3, Timestamp)) = codec::decode(bytes)?;
    codec::encode(&(index, (spec.lift(), at)))
}

#[derive(Serialize, Deserialize)]
struct ScheduleSpecV1 {
    id: JobId,
    account: AccountName,
    display_name: String,
    recurrence: Recurrence,
    not_before: Option<Timestamp>,
    not_after: Option<Timestamp>,
    start_window_secs: Option<u64>,
    overlap: Overlap,
    job: JobSpecV3,
    tasks: Vec<TaskSpecV2>,
}

/// `ScheduleCreated` and `ScheduleUpdated` share their fields (a spec and
/// a time); the variant's index is kept.
pub fn schedule_spec(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (index, (s, at)): (u32, (ScheduleSpecV1, Timestamp)) = codec::decode(bytes)?;
    codec::encode(&(
        index,
        (
            ScheduleSpecV2 {
                id: s.id,
                account: s.account,
                display_name: s.display_name,
                recurrence: s.recurrence,
                not_before: s.not_before,
                not_after: s.not_after,
                start_window_secs: s.start_window_secs,
                overlap: s.overlap,
                job: s.job.lift(),
                tasks: s.tasks.into_iter().map(TaskSpecV2::lift).collect(),
            },
            at,
        ),
    ))
}
