//! Apps: publish a version (its definition checked, its package present),
//! list and show them, and run one: the run checked whole, then made into
//! one job with its tasks (and its pool, for an auto pool) in one append.

use super::{misrouted, AccountCall, Service};
use crate::api::{ApiError, Request, Response};
use crate::domain::app::definition::{self, Split};
use crate::domain::app::submit::{self, AppInput, RunTarget};
use crate::domain::app::{App, AppCommand, INPUTS_CONTAINER};
use crate::domain::{Rejection, RejectionCode};
use crate::store::StreamId;
use crate::types::{AccountName, JobId};

/// Most bytes of a `lines` split's file read to split it.
const LINES_FILE_BYTES_MAX: u64 = 1 << 20;

fn invalid_run(problems: Vec<String>) -> ApiError {
    let n = problems.len();
    Rejection::new(
        RejectionCode::InvalidAppParameters,
        format!(
            "{n} problem{} with this run; nothing was started:\n{}",
            if n == 1 { "" } else { "s" },
            problems.join("\n")
        ),
    )
    .into()
}

impl Service {
    pub(super) async fn apps(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let ctx = || call.ctx(self);
        match request {
            Request::PublishApp {
                definition,
                make_default,
            } => {
                let def = definition::parse(definition).map_err(|p| {
                    Rejection::new(
                        RejectionCode::InvalidAppDefinition,
                        definition::problems_text(&p),
                    )
                })?;
                // Its program: the package of the same id and version.
                self.blobs
                    .resolve(account, def.name.clone(), Some(def.version.clone()))
                    .await
                    .map_err(|mut e| {
                        e.message = format!(
                            "{}; an app's program is the package {} {} (lote app publish uploads both)",
                            e.message, def.name, def.version
                        );
                        e
                    })?;
                let stream = StreamId::app(account, &def.name);
                let command = AppCommand::Publish {
                    account: account.clone(),
                    definition: Box::new(def),
                    make_default: *make_default,
                };
                let outcome = self.core.execute::<App>(&stream, command, ctx()).await?;
                Ok(super::done(&stream, outcome))
            }
            Request::ListApps => Ok(Response::Apps(
                self.list::<App>(&format!("app/{account}/"))?,
            )),
            Request::ShowApp { app } => Ok(Response::App(Box::new(
                self.show::<App>(&app_stream(account, app)?, app).await?,
            ))),
            Request::SetDefaultAppVersion { app, version } => {
                self.exec::<App>(
                    app_stream(account, app)?,
                    AppCommand::SetDefault {
                        version: version.clone(),
                    },
                    ctx(),
                )
                .await
            }
            Request::RunApp { .. } => self.run_app(call, request).await,
            Request::ReprocessAppRun { job } => self.reprocess(call, job).await,
            other => Err(misrouted(other)),
        }
    }

    async fn run_app(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let Request::RunApp {
            app,
            version,
            job,
            params,
            inputs,
            pool,
            auto_pool,
            ..
        } = request
        else {
            return Err(misrouted(request));
        };
        let account = call.account;
        let state = self.show::<App>(&app_stream(account, app)?, app).await?;
        let def = state.state.resolve(version.as_deref())?.clone();
        let values = submit::check_run(&def, params, inputs).map_err(invalid_run)?;
        self.inputs_stored(account, inputs).await?;
        let lines = match &def.split {
            Split::Lines { parameter } => {
                let name = values.get(parameter).cloned().unwrap_or_default();
                let input = inputs.iter().find(|i| i.name == name);
                Some(self.lines_of(account, input).await?)
            }
            _ => None,
        };
        // A run sent again with its request id must name the same job, as
        // the first answer did: the id is then derived from it.
        let job_id = match (job, request.idempotency_key()) {
            (Some(j), _) => j.clone(),
            (None, key) => {
                let suffix = key
                    .unwrap_or_else(crate::clock::new_uuid)
                    .simple()
                    .to_string();
                JobId::new(format!("{}-{}", def.name, &suffix[..8]))
                    .map_err(|e| Rejection::invalid(e.to_string()))?
            }
        };
        let pool_id = match (pool, auto_pool) {
            (Some(p), None) => p.clone(),
            (None, Some(_)) => crate::types::PoolId::new(job_id.as_str())
                .map_err(|e| Rejection::invalid(format!("an auto pool takes the job's id: {e}")))?,
            _ => {
                return Err(Rejection::invalid(
                    "a run names a pool or asks for an auto pool (--pool POOL or --auto-pool nodes=N,slots=S)",
                )
                .into())
            }
        };
        let mut run = submit::expand(
            &def,
            &values,
            RunTarget {
                account,
                job: &job_id,
                pool: &pool_id,
                inputs,
                lines,
            },
        )
        .map_err(invalid_run)?;
        run.job.auto_pool = auto_pool.clone().map(Box::new);
        let (spec, slots) = self.job_spec_ready(call, run.job).await?;
        if def.slots > slots {
            return Err(Rejection::invalid(format!(
                "{} {} needs {} slots a task; nodes of pool {} have {slots}",
                def.name, def.version, def.slots, spec.pool
            ))
            .into());
        }
        let manager = spec.manager_task(slots);
        let tasks: Vec<_> = manager.into_iter().chain(run.tasks).collect();
        let stream = call.job_stream(&spec.id);
        let reply = Response::Created {
            entity: stream.to_string(),
        };
        let ctx = || call.ctx(self);
        self.idempotent(account, request, call.body, reply, |extra| async move {
            self.core
                .create_job_with_tasks(spec, tasks, ctx(), extra)
                .await?;
            Ok(())
        })
        .await
    }

    /// A finished run's failed tasks again, and its merge, as the run's
    /// next job (`ROOT-rN`), on its pool (or a new auto pool like its
    /// own); the tasks keep their ids and where they write, so the run's
    /// outputs gather under the first job's id.
    async fn reprocess(&self, call: &AccountCall<'_>, job: &JobId) -> Result<Response, ApiError> {
        use crate::domain::app::submit::META_RUN;
        use crate::domain::app::RunStatus;
        use crate::domain::job::{Job, JobStatus, TaskBucket};
        let account = call.account;
        let first = self
            .show::<Job>(&call.job_stream(job), job.as_str())
            .await?;
        let meta = |j: &Job, name: &str| {
            j.spec
                .as_ref()
                .and_then(|s| s.metadata.iter().find(|m| m.name == name))
                .map(|m| m.value.clone())
        };
        if meta(&first.state, submit::META_APP).is_none() {
            return Err(Rejection::invalid(format!("job {job} is not an app's run")).into());
        }
        let root = match meta(&first.state, META_RUN) {
            Some(r) => JobId::new(r).map_err(|e| Rejection::invalid(e.to_string()))?,
            None => job.clone(),
        };
        // The run's latest job: the one to take the failures of.
        let (mut latest, mut generation) = (root.clone(), 0u32);
        loop {
            let next = submit::reprocess_id(&root, generation + 1)
                .map_err(|e| Rejection::invalid(e.to_string()))?;
            if self
                .existing::<Job>(&call.job_stream(&next))
                .await?
                .is_none()
            {
                break;
            }
            (latest, generation) = (next, generation + 1);
        }
        let state = self
            .show::<Job>(&call.job_stream(&latest), latest.as_str())
            .await?
            .state;
        let status = RunStatus::of(&state);
        if state.status != JobStatus::Completed
            || !matches!(status, RunStatus::Failed | RunStatus::Cancelled)
        {
            return Err(Rejection::new(
                RejectionCode::JobNotActive,
                format!(
                    "run {root} is {} (its latest job is {latest}); only a run that ended with failed tasks is reprocessed",
                    crate::types::json_name(&status)
                ),
            )
            .into());
        }
        let failed: Vec<_> = self
            .list::<crate::domain::task::Task>(&format!("task/{account}/{latest}/"))?
            .into_iter()
            .filter(|t| t.state.bucket() == Some(TaskBucket::Failed))
            .filter_map(|t| t.state.spec.map(std::sync::Arc::unwrap_or_clone))
            .filter(|s| {
                state
                    .spec
                    .as_ref()
                    .and_then(|j| j.job_manager.as_ref())
                    .is_none_or(|m| m.task.id != s.id)
            })
            .collect();
        let tasks = submit::reprocess_tasks(failed);
        let Some(mut spec) = state.spec.clone() else {
            return Err(Rejection::invalid(format!("job {latest} has no spec")).into());
        };
        spec.id = submit::reprocess_id(&root, generation + 1)
            .map_err(|e| Rejection::invalid(e.to_string()))?;
        spec.job_manager = None;
        spec.metadata.retain(|m| m.name != META_RUN);
        spec.metadata.push(crate::domain::job_prep::MetadataItem {
            name: META_RUN.into(),
            value: root.to_string(),
        });
        let (spec, _) = self.job_spec_ready(call, spec).await?;
        let stream = call.job_stream(&spec.id);
        let ctx = call.ctx(self);
        self.core
            .create_job_with_tasks(spec, tasks, ctx, vec![])
            .await?;
        Ok(Response::Created {
            entity: stream.to_string(),
        })
    }

    /// Every input is in the store under its hash (the client uploads
    /// what the store lacks first).
    async fn inputs_stored(
        &self,
        account: &AccountName,
        inputs: &[AppInput],
    ) -> Result<(), ApiError> {
        let mut missing = vec![];
        for i in inputs {
            if self
                .blobs
                .stat(account, INPUTS_CONTAINER, &i.sha256.to_lowercase())
                .await
                .is_err()
            {
                missing.push(format!(
                    "input {} ({}) is not in {INPUTS_CONTAINER}; upload it first (lote app run does)",
                    i.name, i.sha256
                ));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(invalid_run(missing))
        }
    }

    /// The non-empty lines of a `lines` split's file.
    async fn lines_of(
        &self,
        account: &AccountName,
        input: Option<&AppInput>,
    ) -> Result<Vec<String>, ApiError> {
        let Some(input) = input else {
            return Err(invalid_run(vec![
                "the lines file is not an input of this run".into(),
            ]));
        };
        let name = input.sha256.to_lowercase();
        let meta = self.blobs.stat(account, INPUTS_CONTAINER, &name).await?;
        if meta.size > LINES_FILE_BYTES_MAX {
            return Err(invalid_run(vec![format!(
                "{} is {} bytes; a file split by lines is at most {LINES_FILE_BYTES_MAX}",
                input.name, meta.size
            )]));
        }
        let mut bytes = Vec::with_capacity(meta.size as usize);
        while (bytes.len() as u64) < meta.size {
            let Response::BlobData { data } = self
                .blobs
                .read(
                    account,
                    INPUTS_CONTAINER.into(),
                    name.clone(),
                    meta.sha256.clone(),
                    bytes.len() as u64,
                    u32::MAX,
                )
                .await?
            else {
                break;
            };
            if data.is_empty() {
                break;
            }
            bytes.extend_from_slice(&data);
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| invalid_run(vec![format!("{} is not UTF-8 text", input.name)]))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }
}

fn app_stream(account: &AccountName, app: &str) -> Result<StreamId, ApiError> {
    crate::domain::spec::validate_package_name("app name", app, false)?;
    Ok(StreamId::app(account, app))
}
