//! `lote job`: jobs, why their tasks wait, and waiting for them.

use clap::Subcommand;
use serde_json::Value;

use super::files::{parse_input, parse_input_prefix};
use super::render::render;
use super::{placeholder_account, Rendered};
use lote::api::{ApiError, Request, Response};
use lote::client::{Client, ClientError};
use lote::domain::job::{DisableTasks, JobSpec, OnAllTasksComplete, OnTaskFailure};
use lote::domain::RejectionCode;
use lote::types::{JobId, PoolId};

/// A job's manager task.
#[derive(clap::Args, Debug, Clone)]
pub struct JobManagerArgs {
    /// A task created with the job and placed before its others, run with
    /// /bin/sh -c: it gets LOTE_JOB_KEY, a key good for its own job's
    /// tasks only, so `lote task add` / `add-many` inside it splits the
    /// job. When it completes, the job completes and its other tasks are
    /// terminated, unless --job-manager-keeps-job.
    #[arg(long = "job-manager", value_name = "LINE")]
    line: Option<String>,
    /// The manager task's id.
    #[arg(long, default_value = "jobmanager", requires = "line")]
    job_manager_id: lote::types::TaskId,
    /// The job goes on when its manager completes (it only adds tasks;
    /// end the job with --on-all-tasks-complete terminate-job).
    #[arg(long, requires = "line")]
    job_manager_keeps_job: bool,
    /// Let other tasks share the manager's node (by default it takes every
    /// slot of its node while it runs).
    #[arg(long, requires = "line")]
    job_manager_shares_node: bool,
}

impl JobManagerArgs {
    pub(super) fn spec(&self) -> Option<Box<lote::domain::job::JobManager>> {
        let line = self.line.as_ref()?;
        Some(Box::new(lote::domain::job::JobManager {
            task: lote::domain::task::TaskSpec::simple(
                self.job_manager_id.clone(),
                lote::domain::spec::CommandLine::Shell(line.clone()),
            ),
            kill_job_on_completion: !self.job_manager_keeps_job,
            run_exclusive: !self.job_manager_shares_node,
        }))
    }
}

// Parsed once per process: a large variant costs nothing that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Create a job on a pool (tasks are added with `lote task add`, or by
    /// the job's own manager task).
    ///
    /// Examples:
    ///   lote job create frames --pool render --on-all-tasks-complete terminate-job
    ///   lote job create split --pool render --job-manager './split.sh input.csv' --job-manager-keeps-job --on-all-tasks-complete terminate-job
    ///   lote job create dag --pool render --dependencies --on-all-tasks-complete terminate-job
    ///   lote job create frames --pool render --prep 'cp -r /srv/assets .' --release 'echo done >> /var/tmp/frames.log'
    ///   lote job create burst --auto-pool nodes=4,slots=2 --on-all-tasks-complete terminate-job
    #[command(verbatim_doc_comment)]
    Create {
        id: JobId,
        /// The pool to run on...
        #[arg(long, required_unless_present = "auto_pool")]
        pool: Option<PoolId>,
        /// ...or a pool made for this job alone, under the job's id, and
        /// deleted when the job ends:
        /// nodes=N,slots=S[,cores=C,memory-mib=M,keep-alive].
        #[arg(long, conflicts_with = "pool", value_name = "nodes=N,slots=S")]
        auto_pool: Option<String>,
        #[arg(long, default_value = "")]
        display_name: String,
        /// -1000 (lowest) to 1000 (highest).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// Retries of a failed task before it fails for good.
        #[arg(long, default_value_t = 0)]
        max_task_retries: u32,
        /// Longest the job may run, seconds.
        #[arg(long)]
        max_wall_clock_secs: Option<u64>,
        #[arg(long, value_enum, default_value = "no-action")]
        on_all_tasks_complete: OnAllTasksComplete,
        #[arg(long, value_enum, default_value = "no-action")]
        on_task_failure: OnTaskFailure,
        /// A blob every task of the job gets: CONTAINER/NAME[=PATH][@MODE].
        #[arg(long = "input", value_name = "CONTAINER/NAME[=PATH][@MODE]", value_parser = super::files::input_arg)]
        inputs: Vec<String>,
        /// Every blob under a prefix, for every task: CONTAINER/PREFIX=DIR.
        #[arg(long = "input-prefix", value_name = "CONTAINER/PREFIX=DIR", value_parser = super::files::input_prefix_arg)]
        input_prefixes: Vec<String>,
        #[command(flatten)]
        manager: JobManagerArgs,
        #[command(flatten)]
        dependencies: super::deps::JobDependencyArgs,
        #[command(flatten)]
        prep: super::job_prep::JobPrepArgs,
        #[command(flatten)]
        common: super::job_prep::JobEnvArgs,
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    /// Per node, how the job's preparation and release tasks ended (state,
    /// exit code, retries, why they failed).
    PrepStatus { id: JobId },
    /// The account's jobs: status, pool, tasks, unfinished.
    List,
    /// One job, and why its queued tasks wait.
    Show { id: JobId },
    /// Hold a job's queued tasks (running ones as --disable-tasks says).
    Disable {
        id: JobId,
        #[arg(long, value_enum, default_value = "requeue")]
        disable_tasks: DisableTasks,
    },
    /// Let a disabled job's tasks run again.
    Enable { id: JobId },
    /// End a job: queued tasks cancelled, running ones killed.
    Terminate {
        id: JobId,
        #[arg(long, default_value = "terminated by the user")]
        reason: String,
    },
    /// Delete a job and its tasks (their history stays in the log).
    Delete { id: JobId },
    /// Change a job's settings while it runs: priority, wall-clock limit,
    /// task retries, what happens when its tasks end or fail, metadata.
    /// What is not given stays as it is.
    ///
    /// Examples:
    ///   lote job update frames --priority 500
    ///   lote job update frames --on-all-tasks-complete terminate-job   # after the last task was added
    #[command(verbatim_doc_comment)]
    Update {
        id: JobId,
        #[command(flatten)]
        changes: JobUpdateArgs,
    },
    /// Wait until no task of the job is queued or running; with --progress
    /// a live bar on stderr. Exits 1 if any task failed.
    Wait {
        id: JobId,
        #[arg(long)]
        progress: bool,
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout_secs: Option<u64>,
    },
}

/// What `lote job update` changes; what is not given stays.
#[derive(clap::Args, Debug)]
pub struct JobUpdateArgs {
    /// -1000 (lowest) to 1000 (highest); queued tasks move at once.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Longest the job may run, seconds from its creation (0: no limit).
    #[arg(long)]
    max_wall_clock_secs: Option<u64>,
    /// Retries for tasks added from now on.
    #[arg(long)]
    max_task_retries: Option<u32>,
    #[arg(long, value_enum)]
    on_all_tasks_complete: Option<OnAllTasksComplete>,
    #[arg(long, value_enum)]
    on_task_failure: Option<OnTaskFailure>,
    /// NAME=VALUE, replacing the job's metadata (repeatable).
    #[arg(long = "metadata", value_name = "NAME=VALUE")]
    metadata: Vec<String>,
}

impl JobUpdateArgs {
    fn apply(self, mut spec: JobSpec) -> Result<JobSpec, ClientError> {
        spec.priority = self.priority.unwrap_or(spec.priority);
        if let Some(secs) = self.max_wall_clock_secs {
            spec.max_wall_clock_secs = (secs > 0).then_some(secs);
        }
        spec.max_task_retries = self.max_task_retries.unwrap_or(spec.max_task_retries);
        spec.on_all_tasks_complete = self
            .on_all_tasks_complete
            .unwrap_or(spec.on_all_tasks_complete);
        spec.on_task_failure = self.on_task_failure.unwrap_or(spec.on_task_failure);
        if !self.metadata.is_empty() {
            spec.metadata = self
                .metadata
                .iter()
                .map(|m| {
                    let (name, value) = m.split_once('=').ok_or_else(|| {
                        ClientError::Api(ApiError::rejected(
                            RejectionCode::InvalidValue,
                            format!("--metadata {m:?}: expected NAME=VALUE"),
                        ))
                    })?;
                    Ok(lote::domain::job_prep::MetadataItem {
                        name: name.into(),
                        value: value.into(),
                    })
                })
                .collect::<Result<_, ClientError>>()?;
        }
        Ok(spec)
    }
}

/// Runs one `lote job` command.
pub(super) async fn run(cmd: JobCmd, client: &Client) -> Result<Rendered, ClientError> {
    let call = |r: Request| async move { client.call(&r).await };
    let response = match cmd {
        JobCmd::Create {
            id,
            pool,
            auto_pool,
            display_name,
            priority,
            max_task_retries,
            max_wall_clock_secs,
            on_all_tasks_complete,
            on_task_failure,
            inputs,
            input_prefixes,
            manager,
            dependencies,
            prep,
            common,
            request_id,
        } => {
            let bad =
                |m: String| ClientError::Api(ApiError::rejected(RejectionCode::InvalidValue, m));
            let mut common_resource_files = Vec::new();
            for t in &inputs {
                common_resource_files.push(parse_input(t).map_err(bad)?);
            }
            for t in &input_prefixes {
                common_resource_files.push(parse_input_prefix(t).map_err(bad)?);
            }
            let (common_env, metadata) = common.specs().map_err(bad)?;
            let spec = JobSpec {
                common_env,
                metadata,
                display_name,
                priority,
                max_wall_clock_secs,
                max_task_retries,
                on_all_tasks_complete,
                on_task_failure,
                common_resource_files,
                job_manager: manager.spec(),
                dependencies: dependencies.spec(),
                preparation: prep.specs().0,
                release: prep.specs().1,
                auto_pool: auto_pool
                    .as_deref()
                    .map(super::app::auto_pool_arg)
                    .transpose()?
                    .map(Box::new),
                ..JobSpec::on_pool(
                    id.clone(),
                    placeholder_account(),
                    super::app::pool_or_own(pool, &id),
                )
            };
            call(Request::CreateJob { spec, request_id }).await?
        }
        JobCmd::Update { id, changes } => {
            let Response::Job(job) = call(Request::ShowJob { job: id.clone() }).await? else {
                return Err(ClientError::Protocol("expected a job".into()));
            };
            let spec = job
                .state
                .spec
                .ok_or_else(|| ClientError::Protocol(format!("job {id} has no spec")))?;
            call(Request::UpdateJob {
                spec: changes.apply(spec)?,
            })
            .await?
        }
        JobCmd::List => call(Request::ListJobs).await?,
        JobCmd::PrepStatus { id } => {
            return match call(Request::ShowJob { job: id }).await? {
                Response::Job(job) => Ok(Some(super::job_prep::prep_status(&job.state))),
                other => Ok(Some(render(other))),
            };
        }
        JobCmd::Show { id } => {
            // The job, then why its queued tasks wait, in one view.
            let (mut value, mut text) = render(call(Request::ShowJob { job: id.clone() }).await?);
            let (waits, lines) = render(call(Request::ExplainJob { job: id }).await?);
            if let Value::Object(map) = &mut value {
                map.insert("waiting".into(), waits["summary"].clone());
            }
            text.push_str(&lines);
            return Ok(Some((value, text)));
        }
        JobCmd::Disable { id, disable_tasks } => {
            call(Request::DisableJob {
                job: id,
                disable_tasks,
            })
            .await?
        }
        JobCmd::Enable { id } => call(Request::EnableJob { job: id }).await?,
        JobCmd::Terminate { id, reason } => call(Request::TerminateJob { job: id, reason }).await?,
        JobCmd::Delete { id } => call(Request::DeleteJob { job: id }).await?,
        JobCmd::Wait {
            id,
            progress,
            timeout_secs,
        } => wait_for_job(client, &id, progress, timeout_secs).await?,
    };
    Ok(Some(render(response)))
}

/// Waits until the job has no unfinished task; the job as it then is.
async fn wait_for_job(
    client: &Client,
    id: &JobId,
    progress: bool,
    timeout_secs: Option<u64>,
) -> Result<Response, ClientError> {
    use lote::domain::task::TaskBucket;
    let started = std::time::Instant::now();
    let job = loop {
        // The server answers the moment the job has no unfinished
        // task (pushed, not polled); with --progress at least once
        // a second, to redraw the line.
        let request = super::job_wait::wait_request(id, progress, started, timeout_secs);
        let Response::Job(job) = client.call(&request).await? else {
            return Err(ClientError::Protocol("expected a job".into()));
        };
        let s = &job.state;
        if progress {
            let done = s.count(TaskBucket::Succeeded) + s.count(TaskBucket::Failed);
            eprint!(
                "\r{done}/{} done: {} succeeded, {} failed, {} running, {} queued   ",
                s.tasks_added,
                s.count(TaskBucket::Succeeded),
                s.count(TaskBucket::Failed),
                s.count(TaskBucket::Running),
                s.count(TaskBucket::Active)
            );
        }
        if s.unfinished() == 0 {
            if progress {
                eprintln!();
            }
            break job;
        }
        if timeout_secs.is_some_and(|t| started.elapsed().as_secs() >= t) {
            return Err(ClientError::Timeout(started.elapsed()));
        }
    };
    Ok(Response::Job(job))
}
