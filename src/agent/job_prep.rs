//! A job's preparation, run on this node before the job's first task here
//! (once, whatever number of its tasks arrive together), and its release,
//! run when the job ends. Both run as the pool's user in
//! `ROOT/jobs/JOB/preparation` and `ROOT/jobs/JOB/release`, and are
//! reported to the server, which records them on the job.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use super::start_task::{run_node_task, NodeTask};
use super::*;
use crate::domain::job_prep::{JobPreparation, JobRelease, NodeTaskStatus};
use crate::types::JobId;

type Prepared = Arc<tokio::sync::OnceCell<bool>>;

/// Per job: whether its tasks may run here, once its preparation ended.
static PREPARED: OnceLock<Mutex<HashMap<JobId, Prepared>>> = OnceLock::new();
/// Jobs whose release runs here now.
static RELEASING: OnceLock<Mutex<HashSet<JobId>>> = OnceLock::new();

fn prepared_map() -> std::sync::MutexGuard<'static, HashMap<JobId, Prepared>> {
    PREPARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn releasing() -> std::sync::MutexGuard<'static, HashSet<JobId>> {
    RELEASING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

pub(super) fn job_dir(root: &Path, job: &JobId) -> PathBuf {
    root.join("jobs").join(job.as_str())
}

/// `LOTE_JOB_PREP_DIR` and `LOTE_JOB_PREP_WORKING_DIR` for the job's
/// tasks and for its preparation and release.
pub(super) fn prep_vars(root: &Path, job: &JobId) -> Vec<(String, String)> {
    let dir = job_dir(root, job).join("preparation");
    vec![
        ("LOTE_JOB_PREP_DIR".into(), dir.display().to_string()),
        (
            "LOTE_JOB_PREP_WORKING_DIR".into(),
            dir.join("wd").display().to_string(),
        ),
    ]
}

/// After a reboot every preparation runs again (but those told not to
/// after a success, which their marker file says).
pub(super) fn forget_all() {
    prepared_map().clear();
}

/// The jobs whose release this agent runs now.
pub(super) fn releases_running() -> Vec<JobId> {
    releasing().iter().cloned().collect()
}

/// Whether a task of `job` may run here: its preparation first (once; the
/// job's other tasks wait for it). False when it failed and the job waits
/// for success: the server moves the task elsewhere.
pub(super) async fn prepared(
    client: &Client,
    env: &TaskEnv,
    job: &JobId,
    prep: &JobPreparation,
    job_env: &[crate::domain::EnvVar],
) -> bool {
    let cell = prepared_map().entry(job.clone()).or_default().clone();
    *cell
        .get_or_init(|| async {
            let ok = run_preparation(client, env, job, prep, job_env).await;
            ok || !prep.wait_for_success
        })
        .await
}

async fn run_preparation(
    client: &Client,
    env: &TaskEnv,
    job: &JobId,
    prep: &JobPreparation,
    job_env: &[crate::domain::EnvVar],
) -> bool {
    let marker = job_dir(&env.root, job).join("preparation.succeeded");
    if !prep.rerun_on_reboot_after_success && marker.exists() {
        return true;
    }
    let mut result = launch_failure("not run".into());
    let mut retries = 0;
    for attempt in 0..=prep.retry_count_max {
        retries = attempt;
        let mut vars = vec![("LOTE_JOB_ID".to_string(), job.to_string())];
        vars.extend(prep_vars(&env.root, job));
        let task = NodeTask {
            dir: job_dir(&env.root, job).join("preparation"),
            command_line: &prep.command_line,
            job: job_env,
            own: &prep.env,
            resource_files: &prep.resource_files,
            vars,
            limit: prep.max_wall_clock_secs.map(Duration::from_secs),
            mode: 0o750,
        };
        result = run_node_task(env, task).await;
        if result.succeeded() {
            break;
        }
    }
    let succeeded = result.succeeded();
    if succeeded {
        if let Err(e) = std::fs::write(&marker, b"") {
            tracing::warn!(path = %marker.display(), error = %e, "cannot mark the preparation done");
        }
    } else {
        tracing::warn!(%job, "the job's preparation failed on this node");
    }
    let report = Request::AgentJobPreparationEnded {
        job: job.clone(),
        status: status_of(&result, retries),
    };
    if let Err(e) = report_until_recorded(client, &report).await {
        tracing::warn!(%job, error = %e, "the preparation's end was not recorded");
    }
    succeeded
}

fn status_of(result: &TaskResult, retries: u32) -> NodeTaskStatus {
    NodeTaskStatus {
        succeeded: result.succeeded(),
        exit_code: result.exit_code,
        retries,
        failure: result.failure.as_ref().map(|(_, why)| why.clone()),
    }
}

/// Runs a job's release in the background (no slot), once at a time per
/// job, and reports it.
pub(super) fn start_release(
    client: &Arc<Client>,
    env: &Arc<TaskEnv>,
    job: JobId,
    release: JobRelease,
    job_env: Vec<crate::domain::EnvVar>,
) {
    if !releasing().insert(job.clone()) {
        return;
    }
    let (client, env) = (client.clone(), env.clone());
    tokio::spawn(async move {
        let mut vars = vec![("LOTE_JOB_ID".to_string(), job.to_string())];
        vars.extend(prep_vars(&env.root, &job));
        let task = NodeTask {
            dir: job_dir(&env.root, &job).join("release"),
            command_line: &release.command_line,
            job: &job_env,
            own: &release.env,
            resource_files: &[],
            vars,
            limit: Some(Duration::from_secs(
                release
                    .max_wall_clock_secs
                    .min(crate::domain::job_prep::RELEASE_SECS_MAX),
            )),
            mode: 0o750,
        };
        let result = run_node_task(&env, task).await;
        // Marked before the report: once the server has it, the job may
        // complete, and its directory is on the retention clock already.
        super::retention::job_released(&job_dir(&env.root, &job));
        let report = Request::AgentJobReleaseEnded {
            job: job.clone(),
            status: status_of(&result, 0),
        };
        if let Err(e) = report_until_recorded(&client, &report).await {
            tracing::warn!(%job, error = %e, "the release's end was not recorded");
        }
        prepared_map().remove(&job);
        releasing().remove(&job);
    });
}
