//! `lote app jobs` and `lote app job ...`: an app's runs as their users
//! see them (state, percent complete, result and preview, per-task
//! outputs), downloads, cancel and reprocess.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{refused, table};
use super::Rendered;
use lote::api::{Request, Response};
use lote::blob::transfer;
use lote::blob::BlobMeta;
use lote::client::{Client, ClientError};
use lote::domain::app::submit::{
    reprocess_id, result_prefix, result_preview_prefix, META_APP, META_PARAM, META_RUN,
    META_VERSION,
};
use lote::domain::app::{RunStatus, CANCEL_REASON, JOBS_CONTAINER};
use lote::domain::job::{Job, TaskBucket};
use lote::domain::task::Task;
use lote::domain::Versioned;
use lote::types::JobId;

#[derive(Subcommand, Debug)]
pub enum AppJobCmd {
    /// A run: state, percent complete, tasks by state, parameters, its
    /// result and preview when ready, and what each task left.
    Show { id: JobId },
    /// Download a run's result (--result, the default), its preview
    /// (--preview), or everything its tasks left (--all), into --dest.
    ///
    /// Example: lote app job download zoom-1a2b3c4d --dest ./out
    #[command(verbatim_doc_comment)]
    Download {
        id: JobId,
        #[arg(long, conflicts_with_all = ["preview", "all"])]
        result: bool,
        #[arg(long, conflicts_with = "all")]
        preview: bool,
        #[arg(long)]
        all: bool,
        /// Directory to write into [default: the current directory].
        #[arg(long)]
        dest: Option<PathBuf>,
    },
    /// Wait until a run ends; exit 1 if it failed or was cancelled.
    Wait {
        id: JobId,
        #[arg(long)]
        progress: bool,
        #[arg(long)]
        timeout_secs: Option<u64>,
    },
    /// Cancel a run: its tasks are stopped and nothing more starts.
    Cancel { id: JobId },
    /// Run the failed tasks of a finished run again (and then its merge);
    /// what succeeded is kept.
    Reprocess { id: JobId },
}

pub(super) async fn run(cmd: AppJobCmd, client: &Client) -> Result<Rendered, ClientError> {
    match cmd {
        AppJobCmd::Show { id } => {
            let run = run_of(client, &id).await?;
            let blobs = transfer::list_all(client, JOBS_CONTAINER, &format!("{}/", run.id()))
                .await
                .unwrap_or_default();
            let (mut value, mut text) = show_view(&run, &blobs);
            let (tasks, lines) = per_task(client, &run).await?;
            value["task_outputs"] = tasks;
            text.push_str(&lines);
            Ok(Some((value, text)))
        }
        AppJobCmd::Download {
            id,
            result: _,
            preview,
            all,
            dest,
        } => {
            let run = run_of(client, &id).await?;
            let status = run.status();
            let id = JobId::new(run.id()).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let (prefix, what) = if all {
                (format!("{id}/"), "everything")
            } else if preview {
                (result_preview_prefix(&id), "preview")
            } else {
                (result_prefix(&id), "result")
            };
            let blobs = transfer::list_all(client, JOBS_CONTAINER, &prefix)
                .await
                .map_err(super::output::from_transfer)?;
            if blobs.is_empty() {
                return Err(refused(format!(
                    "run {id} has no {what} to download (it is {}){}",
                    super::output::word(&status),
                    if status == RunStatus::Failed {
                        "; lote app job show lists what its tasks left, and lote app job reprocess runs the failed ones again"
                    } else {
                        ""
                    }
                )));
            }
            let dir = dest.unwrap_or_else(|| PathBuf::from("."));
            let mut files = vec![];
            for meta in &blobs {
                let rel = meta.name[prefix.len()..].trim_start_matches('/');
                let path = dir.join(rel);
                super::blob::download_one(client, meta, &path).await?;
                files.push(path.display().to_string());
            }
            Ok(Some((
                json!({ "job": id, "files": files }),
                files.iter().map(|f| format!("{f}\n")).collect(),
            )))
        }
        AppJobCmd::Wait {
            id,
            progress,
            timeout_secs,
        } => {
            let run = run_of(client, &id).await?;
            let latest = JobId::new(job_id_of(run.latest()))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            wait(client, &latest, progress, timeout_secs).await
        }
        AppJobCmd::Cancel { id } => {
            let run = run_of(client, &id).await?;
            let latest = JobId::new(job_id_of(run.latest()))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let r = client
                .call(&Request::TerminateJob {
                    job: latest,
                    reason: CANCEL_REASON.into(),
                })
                .await?;
            Ok(Some(super::render::render(r)))
        }
        AppJobCmd::Reprocess { id } => {
            app_job(client, &id).await?;
            let r = client.call(&Request::ReprocessAppRun { job: id }).await?;
            Ok(Some(super::render::render(r)))
        }
    }
}

/// A run: its first job and the jobs that reprocessed it, in order.
struct Run {
    jobs: Vec<Versioned<Job>>,
}

impl Run {
    fn root(&self) -> &Job {
        &self.jobs[0].state
    }
    fn latest(&self) -> &Job {
        &self.jobs[self.jobs.len() - 1].state
    }
    fn id(&self) -> String {
        job_id_of(self.root())
    }
    fn status(&self) -> RunStatus {
        RunStatus::of(self.latest())
    }
    /// Counts over the run: what succeeded in any of its jobs, and the
    /// latest job's failed, running and queued tasks.
    fn count(&self, bucket: TaskBucket) -> u64 {
        match bucket {
            TaskBucket::Succeeded => self.jobs.iter().map(|j| j.state.count(bucket)).sum(),
            _ => self.latest().count(bucket),
        }
    }
    fn percent(&self) -> u64 {
        let done = self.count(TaskBucket::Succeeded) + self.count(TaskBucket::Failed);
        (done * 100)
            .checked_div(self.root().tasks_added)
            .unwrap_or(0)
            .min(100)
    }
}

fn job_id_of(job: &Job) -> String {
    job.spec
        .as_ref()
        .map(|s| s.id.to_string())
        .unwrap_or_default()
}

/// The run a job belongs to (any of its jobs names it).
async fn run_of(client: &Client, id: &JobId) -> Result<Run, ClientError> {
    let first = app_job(client, id).await?;
    let root = match meta(&first.state, META_RUN) {
        Some(r) => JobId::new(r).map_err(|e| ClientError::Protocol(e.to_string()))?,
        None => id.clone(),
    };
    let mut jobs = vec![if root == *id {
        first
    } else {
        app_job(client, &root).await?
    }];
    for generation in 1.. {
        let Ok(next) = reprocess_id(&root, generation) else {
            break;
        };
        match client.call(&Request::ShowJob { job: next }).await {
            Ok(Response::Job(j)) => jobs.push(j),
            _ => break,
        }
    }
    Ok(Run { jobs })
}

/// The job, refused when it is not an app's run.
async fn app_job(client: &Client, id: &JobId) -> Result<Versioned<Job>, ClientError> {
    let Response::Job(job) = client.call(&Request::ShowJob { job: id.clone() }).await? else {
        return Err(ClientError::Protocol("expected a job".into()));
    };
    if meta(&job.state, META_APP).is_none() {
        return Err(refused(format!(
            "job {id} is not an app's run (lote job show {id} shows it)"
        )));
    }
    Ok(job)
}

fn meta<'a>(job: &'a Job, name: &str) -> Option<&'a str> {
    job.spec
        .as_ref()?
        .metadata
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value.as_str())
}

/// Most tasks `app job show` lists in text (JSON has them all).
const TASKS_SHOWN: usize = 30;

/// Each task of the run (its latest attempt, in whichever job ran it
/// last) with the files it left, by kind.
async fn per_task(client: &Client, run: &Run) -> Result<(Value, String), ClientError> {
    let mut latest: std::collections::BTreeMap<u64, (String, Versioned<Task>)> = Default::default();
    for job in &run.jobs {
        let id =
            JobId::new(job_id_of(&job.state)).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut after = None;
        loop {
            let Response::Tasks { items, next } = client
                .call(&Request::ListTasks {
                    job: id.clone(),
                    after: after.take(),
                    limit: 0,
                })
                .await?
            else {
                return Err(ClientError::Protocol("expected tasks".into()));
            };
            for t in items {
                let Some(spec) = t.state.spec.as_ref() else {
                    continue;
                };
                // A splitter's is not a numbered task: listed first.
                let n = lote::domain::task_spec::numeric_id(spec.id.as_str()).unwrap_or(0);
                latest.insert(n, (id.to_string(), t));
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    let mut rows = vec![];
    let mut values = vec![];
    for (job, t) in latest.values() {
        let spec = t.state.spec.as_ref().expect("listed with a spec");
        let files: Vec<&lote::domain::task::OutputManifestEntry> = t
            .state
            .outputs
            .iter()
            .filter(|o| !o.path.starts_with("../"))
            .collect();
        let kinds = |o: &&lote::domain::task::OutputManifestEntry| file_kind(&o.name);
        let mut by_kind: std::collections::BTreeMap<&str, usize> = Default::default();
        for o in &files {
            *by_kind.entry(kinds(o)).or_default() += 1;
        }
        let summary: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let state = t
            .state
            .bucket()
            .map(|b| super::output::word(&b))
            .unwrap_or_default();
        rows.push(vec![
            spec.id.to_string(),
            spec.display_name.clone(),
            state.clone(),
            if summary.is_empty() {
                "-".into()
            } else {
                summary.join(", ")
            },
        ]);
        values.push(json!({
            "job": job, "task": spec.id, "name": spec.display_name, "state": state,
            "attempts": t.state.attempt,
            "files": files.iter().map(|o| json!({
                "path": o.path, "blob": o.name, "kind": kinds(o), "size": o.size,
            })).collect::<Vec<_>>(),
        }));
    }
    let more = rows.len().saturating_sub(TASKS_SHOWN);
    rows.truncate(TASKS_SHOWN);
    let mut text = format!(
        "\ntasks:\n{}",
        table(&["task", "name", "state", "left"], rows)
    );
    if more > 0 {
        text.push_str(&format!(
            "... and {more} more (--output json lists every task)\n"
        ));
    }
    Ok((Value::Array(values), text))
}

/// A run's file's kind, from where it is kept.
fn file_kind(blob: &str) -> &'static str {
    let mut parts = blob.split('/').skip(1);
    match (parts.next(), parts.nth(1)) {
        (Some("output"), _) => "output",
        (Some("intermediate"), _) => "intermediate",
        (Some("result"), _) => "result",
        (Some("result-preview"), _) => "result preview",
        (Some("tasks"), Some("preview")) => "preview",
        (Some("tasks"), Some("log")) => "log",
        _ => "other",
    }
}

/// Waits for a run to end, with a progress line on stderr if asked.
pub(super) async fn wait(
    client: &Client,
    id: &JobId,
    progress: bool,
    timeout_secs: Option<u64>,
) -> Result<Rendered, ClientError> {
    let started = std::time::Instant::now();
    loop {
        let run = run_of(client, id).await?;
        let status = run.status();
        if progress {
            eprint!("\r{}   ", progress_line(&run));
        }
        if matches!(
            status,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        ) {
            if progress {
                eprintln!();
            }
            let blobs = transfer::list_all(client, JOBS_CONTAINER, &format!("{}/", run.id()))
                .await
                .unwrap_or_default();
            return Ok(Some(show_view(&run, &blobs)));
        }
        if timeout_secs.is_some_and(|t| started.elapsed().as_secs() >= t) {
            return Err(ClientError::Timeout(started.elapsed()));
        }
        // A run ends when its job has no unfinished task: the server
        // answers then (or in a second, to redraw the progress line).
        let request = super::job_wait::wait_request(id, progress, started, timeout_secs);
        client.call(&request).await?;
    }
}

fn progress_line(run: &Run) -> String {
    format!(
        "{}: {}% ({} of {} tasks done: {} succeeded, {} failed, {} running, {} queued)",
        super::output::word(&run.status()),
        run.percent(),
        run.count(TaskBucket::Succeeded) + run.count(TaskBucket::Failed),
        run.root().tasks_added,
        run.count(TaskBucket::Succeeded),
        run.count(TaskBucket::Failed),
        run.count(TaskBucket::Running),
        run.count(TaskBucket::Active),
    )
}

/// `lote app jobs [APP]`: one line per run (its reprocessing jobs folded
/// into it).
pub(super) async fn list(client: &Client, app: Option<&str>) -> Result<Rendered, ClientError> {
    let Response::Jobs(jobs) = client.call(&Request::ListJobs).await? else {
        return Err(ClientError::Protocol("expected jobs".into()));
    };
    let app_jobs: Vec<Versioned<Job>> = jobs
        .into_iter()
        .filter(|j| meta(&j.state, META_APP).is_some_and(|name| app.is_none_or(|a| a == name)))
        .collect();
    let mut runs: Vec<Run> = vec![];
    for j in app_jobs
        .iter()
        .filter(|j| meta(&j.state, META_RUN).is_none())
    {
        let root = job_id_of(&j.state);
        let mut chain: Vec<Versioned<Job>> = vec![j.clone()];
        let mut later: Vec<&Versioned<Job>> = app_jobs
            .iter()
            .filter(|x| meta(&x.state, META_RUN) == Some(root.as_str()))
            .collect();
        later.sort_by_key(|x| x.state.created_at);
        chain.extend(later.into_iter().cloned());
        runs.push(Run { jobs: chain });
    }
    let mut rows = vec![];
    let mut values = vec![];
    for run in &runs {
        let root = run.root();
        let name = meta(root, META_APP).unwrap_or("");
        let version = meta(root, META_VERSION).unwrap_or("");
        rows.push(vec![
            run.id(),
            format!("{name} {version}"),
            super::output::word(&run.status()),
            format!("{}%", run.percent()),
            super::output::opt(&root.created_at),
        ]);
        values.push(json!({
            "job": run.id(), "app": name, "version": version, "status": run.status(),
            "percent_complete": run.percent(), "created_at": root.created_at,
            "reprocessed": run.jobs.len() - 1,
        }));
    }
    let text = if rows.is_empty() {
        "no app runs yet: lote app run APP ...\n".to_string()
    } else {
        table(&["job", "app", "status", "done", "created"], rows)
    };
    Ok(Some((json!({ "runs": values }), text)))
}

fn show_view(run: &Run, blobs: &[BlobMeta]) -> (Value, String) {
    let job = run.root();
    let id = job
        .spec
        .as_ref()
        .map(|s| s.id.to_string())
        .unwrap_or_default();
    let status = run.status();
    let params: Vec<(String, String)> = job
        .spec
        .iter()
        .flat_map(|s| s.metadata.iter())
        .filter_map(|m| {
            m.name
                .strip_prefix(META_PARAM)
                .map(|p| (p.to_string(), m.value.clone()))
        })
        .collect();
    let under = |prefix: &str| -> Vec<&BlobMeta> {
        blobs
            .iter()
            .filter(|b| b.name.starts_with(prefix))
            .collect()
    };
    let job_id = JobId::new(id.clone()).ok();
    let result = job_id
        .as_ref()
        .map(|j| under(&result_prefix(j)))
        .unwrap_or_default();
    let preview = job_id
        .as_ref()
        .map(|j| under(&result_preview_prefix(j)))
        .unwrap_or_default();
    let outputs = under(&format!("{id}/output/"));
    let intermediate = under(&format!("{id}/intermediate/"));
    let task_files = under(&format!("{id}/tasks/"));
    let mut text = format!(
        "run {id}: {} {}\nstatus: {}, {}% complete\n",
        meta(job, META_APP).unwrap_or(""),
        meta(job, META_VERSION).unwrap_or(""),
        super::output::word(&status),
        run.percent(),
    );
    text.push_str(&format!("{}\n", progress_line(run)));
    for j in &run.jobs[1..] {
        text.push_str(&format!(
            "reprocessed as {}: {}\n",
            job_id_of(&j.state),
            super::output::word(&RunStatus::of(&j.state))
        ));
    }
    if let Some(reason) = &run.latest().completion_reason {
        text.push_str(&format!("ended: {reason}\n"));
    }
    if !params.is_empty() {
        let list: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!("parameters: {}\n", list.join(" ")));
    }
    let name = |b: &BlobMeta| b.name.rsplit('/').next().unwrap_or(&b.name).to_string();
    match result.first() {
        Some(r) => text.push_str(&format!(
            "result: {} ({} bytes): lote app job download {id}\n",
            name(r),
            r.size
        )),
        None => text.push_str("result: not yet\n"),
    }
    if let Some(p) = preview.first() {
        text.push_str(&format!(
            "preview: {} ({} bytes): lote app job download {id} --preview\n",
            name(p),
            p.size
        ));
    }
    text.push_str(&format!(
        "task outputs: {} output, {} intermediate, {} preview and log files (lote app job download {id} --all)\n",
        outputs.len(),
        intermediate.len(),
        task_files.len()
    ));
    if status == RunStatus::Failed {
        text.push_str(&format!(
            "failed tasks: lote task list {id} --state failed; run them again: lote app job reprocess {id}\n"
        ));
    }
    let files = |list: &[&BlobMeta]| -> Value {
        Value::Array(
            list.iter()
                .map(|b| json!({ "name": b.name, "size": b.size, "sha256": b.sha256 }))
                .collect(),
        )
    };
    let value = json!({
        "job": id,
        "app": meta(job, META_APP),
        "version": meta(job, META_VERSION),
        "status": status,
        "percent_complete": run.percent(),
        "tasks": job.tasks_added,
        "task_counts": {
            "queued": run.count(TaskBucket::Active),
            "running": run.count(TaskBucket::Running),
            "succeeded": run.count(TaskBucket::Succeeded),
            "failed": run.count(TaskBucket::Failed),
        },
        "jobs": run.jobs.iter().map(|j| job_id_of(&j.state)).collect::<Vec<_>>(),
        "parameters": params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "completion_reason": run.latest().completion_reason,
        "result": files(&result),
        "preview": files(&preview),
        "outputs": files(&outputs),
        "intermediate": files(&intermediate),
        "task_files": files(&task_files),
    });
    (value, text)
}
