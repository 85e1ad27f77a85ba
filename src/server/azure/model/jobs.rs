//! Jobs and tasks in Azure's JSON, both ways.

use serde_json::{json, Map, Value};

use super::*;
use crate::domain::job::{Job, JobStatus, OnAllTasksComplete, OnTaskFailure};
use crate::domain::task::{FailureCategory, Task, TaskStatus};
use crate::domain::task_spec::{
    DependencyAction, ExitConditions, ExitOptions, JobAction, TaskDependencies, TaskIdRange,
};
use crate::domain::Versioned;

/// Job properties lote has no use for, refused when set.
const JOB_UNSUPPORTED: [(&str, &str); 2] = [
    ("allowTaskPreemption", "lote does not preempt tasks"),
    (
        "networkConfiguration",
        "lote's pools have no virtual networks",
    ),
];

/// `BatchJobCreateOptions` (or a schedule's `jobSpecification`) into the
/// job spec's fields. The pool: `poolInfo.poolId`, or an auto pool.
pub fn job_spec(
    v: &Value,
    id: crate::types::JobId,
    account: &crate::types::AccountName,
    sizes: &[VmSize],
) -> Result<crate::domain::job::JobSpec, Invalid> {
    refuse_present(v, &JOB_UNSUPPORTED)?;
    let info = v
        .get("poolInfo")
        .ok_or_else(|| invalid("poolInfo", "is missing"))?;
    let mut auto_pool = None;
    let pool = if let Some(p) = str_of(info, "poolId") {
        crate::types::PoolId::new(p).map_err(|e| invalid("poolInfo.poolId", e.to_string()))?
    } else if let Some(auto) = info.get("autoPoolSpecification") {
        if str_of(auto, "poolLifetimeOption") == Some("jobschedule") {
            return Err(invalid(
                "poolLifetimeOption",
                "jobschedule is not supported: each of a schedule's jobs gets its own pool (job)",
            ));
        }
        let mut body = auto.get("pool").cloned().unwrap_or_else(|| json!({}));
        body["id"] = json!(id.as_str());
        let pool = pool_spec(&body, account, sizes)?;
        auto_pool = Some(Box::new(crate::domain::job::AutoPool {
            pool,
            keep_alive: flag(auto, "keepAlive", false),
        }));
        crate::types::PoolId::new(id.as_str()).map_err(|e| invalid("id", e.to_string()))?
    } else {
        return Err(invalid("poolInfo", "give poolId or autoPoolSpecification"));
    };
    let mut spec = crate::domain::job::JobSpec::on_pool(id, account.clone(), pool);
    spec.auto_pool = auto_pool;
    spec.display_name = str_of(v, "displayName").unwrap_or_default().into();
    spec.priority = v.get("priority").and_then(Value::as_i64).unwrap_or(0) as i32;
    if let Some(c) = v.get("constraints") {
        spec.max_wall_clock_secs = duration_of(c, "maxWallClockTime")?;
        spec.max_task_retries = u32_of(c, "maxTaskRetryCount")?.unwrap_or(0);
    }
    spec.on_all_tasks_complete = match str_of(v, "onAllTasksComplete") {
        Some("terminatejob") => OnAllTasksComplete::TerminateJob,
        _ => OnAllTasksComplete::NoAction,
    };
    spec.on_task_failure = match str_of(v, "onTaskFailure") {
        Some("performexitoptionsjobaction") => OnTaskFailure::PerformExitOptionsJobAction,
        _ => OnTaskFailure::NoAction,
    };
    if flag(v, "usesTaskDependencies", false) {
        spec.dependencies = Some(crate::domain::job::JobDependencies {
            on_failed_parent: DependencyAction::Block,
        });
    }
    spec.common_env = env_of(&json!({"environmentSettings": v.get("commonEnvironmentSettings")}))?;
    spec.metadata = metadata_of(v)?;
    if let Some(p) = v.get("jobPreparationTask") {
        let c = p.get("constraints").cloned().unwrap_or_else(|| json!({}));
        spec.preparation = Some(Box::new(crate::domain::job_prep::JobPreparation {
            command_line: CommandLine::Argv(split_words(
                str_of(p, "commandLine").unwrap_or_default(),
            )?),
            env: env_of(p)?,
            resource_files: resources_of(p)?,
            max_wall_clock_secs: duration_of(&c, "maxWallClockTime")?,
            retry_count_max: u32_of(&c, "maxTaskRetryCount")?.unwrap_or(0),
            wait_for_success: flag(p, "waitForSuccess", true),
            rerun_on_reboot_after_success: flag(p, "rerunOnNodeRebootAfterSuccess", true),
        }));
    }
    if let Some(r) = v.get("jobReleaseTask") {
        spec.release = Some(Box::new(crate::domain::job_prep::JobRelease {
            command_line: CommandLine::Argv(split_words(
                str_of(r, "commandLine").unwrap_or_default(),
            )?),
            env: env_of(r)?,
            max_wall_clock_secs: duration_of(r, "maxWallClockTime")?
                .unwrap_or(crate::domain::job_prep::RELEASE_SECS_MAX),
        }));
    }
    if let Some(m) = v.get("jobManagerTask") {
        let mut task = task_spec(m)?;
        task.constraints.max_task_retries = Some(task.constraints.max_task_retries.unwrap_or(0));
        spec.job_manager = Some(Box::new(crate::domain::job::JobManager {
            task,
            kill_job_on_completion: flag(m, "killJobOnCompletion", true),
            run_exclusive: flag(m, "runExclusive", true),
        }));
    }
    Ok(spec)
}

/// A job's spec after Azure's update (`replace`: PUT, absent properties
/// back to their defaults) of the properties lote lets change.
pub fn job_update(
    v: &Value,
    mut spec: crate::domain::job::JobSpec,
    replace: bool,
) -> Result<crate::domain::job::JobSpec, Invalid> {
    refuse_present(v, &JOB_UNSUPPORTED)?;
    if let Some(pool) = v
        .get("poolInfo")
        .and_then(|p| p.get("poolId"))
        .and_then(Value::as_str)
    {
        if pool != spec.pool.as_str() {
            return Err(invalid("poolInfo", "lote moves no job to another pool"));
        }
    }
    let given = |key: &str| v.get(key).is_some_and(|x| !x.is_null());
    if given("priority") || replace {
        spec.priority = v.get("priority").and_then(Value::as_i64).unwrap_or(0) as i32;
    }
    if given("constraints") || replace {
        let c = v.get("constraints").cloned().unwrap_or_else(|| json!({}));
        spec.max_wall_clock_secs = duration_of(&c, "maxWallClockTime")?;
        spec.max_task_retries = u32_of(&c, "maxTaskRetryCount")?.unwrap_or(0);
    }
    if given("onAllTasksComplete") || replace {
        spec.on_all_tasks_complete = match str_of(v, "onAllTasksComplete") {
            Some("terminatejob") => OnAllTasksComplete::TerminateJob,
            _ => OnAllTasksComplete::NoAction,
        };
    }
    if given("onTaskFailure") || replace {
        spec.on_task_failure = match str_of(v, "onTaskFailure") {
            Some("performexitoptionsjobaction") => OnTaskFailure::PerformExitOptionsJobAction,
            _ => OnTaskFailure::NoAction,
        };
    }
    if given("metadata") || replace {
        spec.metadata = metadata_of(v)?;
    }
    Ok(spec)
}

fn metadata_of(v: &Value) -> Result<Vec<crate::domain::job_prep::MetadataItem>, Invalid> {
    let Some(list) = v.get("metadata").and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    list.iter()
        .map(|m| {
            Ok(crate::domain::job_prep::MetadataItem {
                name: str_of(m, "name")
                    .ok_or_else(|| invalid("metadata", "an item has no name"))?
                    .into(),
                value: str_of(m, "value").unwrap_or_default().into(),
            })
        })
        .collect()
}

fn job_state(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Absent | JobStatus::Active => "active",
        JobStatus::Disabled => "disabled",
        JobStatus::Terminating => "terminating",
        JobStatus::Completed => "completed",
        JobStatus::Deleted => "deleting",
    }
}

pub fn job_json(base: &str, j: &Versioned<Job>) -> Value {
    let s = &j.state;
    let Some(spec) = &s.spec else {
        return Value::Null;
    };
    json!({
        "id": spec.id,
        "displayName": spec.display_name,
        "url": format!("{base}/jobs/{}", spec.id),
        "eTag": etag(j.version),
        "lastModified": time(&s.completed_at.or(s.created_at)),
        "creationTime": time(&s.created_at),
        "state": job_state(s.status),
        "stateTransitionTime": time(&s.completed_at.or(s.created_at)),
        "priority": spec.priority,
        "usesTaskDependencies": spec.dependencies.is_some(),
        "constraints": {
            "maxWallClockTime": spec.max_wall_clock_secs.map(duration),
            "maxTaskRetryCount": spec.max_task_retries,
        },
        "poolInfo": {"poolId": spec.pool},
        "onAllTasksComplete": match spec.on_all_tasks_complete { OnAllTasksComplete::TerminateJob => "terminatejob", _ => "noaction" },
        "onTaskFailure": match spec.on_task_failure { OnTaskFailure::PerformExitOptionsJobAction => "performexitoptionsjobaction", _ => "noaction" },
        "commonEnvironmentSettings": env_json(&spec.common_env),
        "metadata": spec.metadata.iter().map(|m| json!({"name": m.name, "value": m.value})).collect::<Vec<_>>(),
        "executionInfo": {
            "startTime": time(&s.created_at),
            "endTime": time(&s.completed_at),
            "poolId": spec.pool,
            // Azure's words for lote's own reasons.
            "terminateReason": s.completion_reason.as_deref().map(|r| match r {
                "all tasks completed" | "all tasks finished" => "AllTasksComplete",
                "job manager complete" => "JMComplete",
                other => other,
            }),
        },
    })
}

fn exit_options_of(v: &Value) -> ExitOptions {
    let o = v.get("exitOptions").unwrap_or(v);
    ExitOptions {
        job_action: match str_of(o, "jobAction") {
            Some("disable") => Some(JobAction::Disable),
            Some("terminate") => Some(JobAction::Terminate),
            Some("none") => Some(JobAction::None),
            _ => None,
        },
        dependency_action: match str_of(o, "dependencyAction") {
            Some("satisfy") => Some(DependencyAction::Satisfy),
            Some("block") => Some(DependencyAction::Block),
            _ => None,
        },
        retry: None,
    }
}

fn exit_conditions_of(v: &Value) -> Option<Box<ExitConditions>> {
    let e = v.get("exitConditions")?;
    let list = |key| {
        e.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    Some(Box::new(ExitConditions {
        exit_codes: list("exitCodes")
            .iter()
            .filter_map(|c| Some((c.get("code")?.as_i64()? as i32, exit_options_of(c))))
            .collect(),
        exit_code_ranges: list("exitCodeRanges")
            .iter()
            .filter_map(|c| {
                Some((
                    c.get("start")?.as_i64()? as i32,
                    c.get("end")?.as_i64()? as i32,
                    exit_options_of(c),
                ))
            })
            .collect(),
        pre_processing_error: e.get("preProcessingError").map(exit_options_of),
        file_upload_error: e.get("fileUploadError").map(exit_options_of),
        default: e.get("default").map(exit_options_of),
    }))
}

/// `BatchTaskCreateOptions` as a lote task spec.
pub fn task_spec(v: &Value) -> Result<crate::domain::task::TaskSpec, Invalid> {
    refuse_present(
        v,
        &[
            ("multiInstanceSettings", "multi-instance tasks are not supported"),
            ("containerSettings", "lote runs no containers"),
            ("outputFiles", "output files name Azure Storage; upload to lote's blob store with the lote CLI or the message API"),
        ],
    )?;
    let id = str_of(v, "id").ok_or_else(|| invalid("id", "is missing"))?;
    let id = crate::types::TaskId::new(id).map_err(|e| invalid("id", e.to_string()))?;
    let argv = split_words(str_of(v, "commandLine").unwrap_or_default())?;
    let mut t = crate::domain::task::TaskSpec::simple(id, CommandLine::Argv(argv));
    t.display_name = str_of(v, "displayName").unwrap_or_default().into();
    t.env = env_of(v)?;
    t.resource_files = resources_of(v)?;
    if let Some(c) = v.get("constraints") {
        t.constraints.max_wall_clock_secs = duration_of(c, "maxWallClockTime")?;
        t.constraints.retention_secs = duration_of(c, "retentionTime")?;
        t.constraints.max_task_retries = u32_of(c, "maxTaskRetryCount")?;
    }
    t.required_slots = u32_of(v, "requiredSlots")?.unwrap_or(1);
    t.application_packages = packages_of(v);
    if let Some(d) = v.get("dependsOn") {
        t.depends_on = TaskDependencies {
            task_ids: d
                .get("taskIds")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|x| x.as_str())
                        .filter_map(|x| crate::types::TaskId::new(x).ok())
                        .collect()
                })
                .unwrap_or_default(),
            ranges: d
                .get("taskIdRanges")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|r| {
                            Some(TaskIdRange {
                                start: r.get("start")?.as_u64()?,
                                end: r.get("end")?.as_u64()?,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
    }
    t.exit_conditions = exit_conditions_of(v);
    Ok(t)
}

fn task_state(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Absent | TaskStatus::Active => "active",
        TaskStatus::Assigned => "preparing",
        TaskStatus::Running => "running",
        TaskStatus::Completed | TaskStatus::Deleted => "completed",
    }
}

pub fn task_json(base: &str, job: &str, t: &Versioned<Task>) -> Value {
    let s = &t.state;
    let Some(spec) = &s.spec else {
        return Value::Null;
    };
    let mut exec = Map::new();
    exec.insert("startTime".into(), time(&s.started_at));
    exec.insert("endTime".into(), time(&s.completed_at));
    exec.insert("retryCount".into(), json!(s.retry_count));
    exec.insert("requeueCount".into(), json!(s.requeue_count));
    if let (TaskStatus::Completed, Some(r)) = (s.status, &s.last_result) {
        exec.insert("exitCode".into(), json!(r.exit_code));
        exec.insert(
            "result".into(),
            json!(if r.succeeded() { "success" } else { "failure" }),
        );
        if let Some((category, message)) = &r.failure {
            let (azure, code) = match category {
                FailureCategory::NonZeroExit => ("usererror", "NonZeroExitCode"),
                FailureCategory::ResourceFile => ("usererror", "BlobDownloadMiscError"),
                FailureCategory::OutputFile => ("usererror", "FileUploadMiscError"),
                FailureCategory::LaunchFailure => ("usererror", "CommandProgramNotFound"),
                FailureCategory::Timeout => ("usererror", "MaxWallClockTimeExpired"),
                FailureCategory::Terminated => ("usererror", "TaskEnded"),
                FailureCategory::ParentFailed => ("usererror", "TaskDependenciesNotSatisfied"),
                _ => ("servererror", "TaskFailed"),
            };
            exec.insert(
                "failureInfo".into(),
                json!({"category": azure, "code": code, "message": message}),
            );
        }
    }
    let mut out = json!({
        "id": spec.id,
        "displayName": spec.display_name,
        "url": format!("{base}/jobs/{job}/tasks/{}", spec.id),
        "eTag": etag(t.version),
        "creationTime": time(&s.added_at),
        "lastModified": time(&s.completed_at.or(s.started_at).or(s.added_at)),
        "state": task_state(s.status),
        "stateTransitionTime": time(&s.completed_at.or(s.started_at).or(s.added_at)),
        "commandLine": command_text(&spec.command_line),
        "environmentSettings": env_json(&spec.env),
        "requiredSlots": spec.required_slots,
        "constraints": {
            "maxWallClockTime": spec.constraints.max_wall_clock_secs.map(duration),
            "retentionTime": spec.constraints.retention_secs.map(duration),
            "maxTaskRetryCount": s.max_task_retries,
        },
        "executionInfo": Value::Object(exec),
    });
    if let (Some(p), Value::Object(map)) = (&s.placement, &mut out) {
        map.insert(
            "nodeInfo".into(),
            json!({"poolId": p.pool, "nodeId": p.node, "nodeUrl": format!("{base}/pools/{}/nodes/{}", p.pool, p.node)}),
        );
    }
    if !spec.depends_on.is_empty() {
        out["dependsOn"] = json!({
            "taskIds": spec.depends_on.task_ids,
            "taskIdRanges": spec.depends_on.ranges.iter().map(|r| json!({"start": r.start, "end": r.end})).collect::<Vec<_>>(),
        });
    }
    out
}
