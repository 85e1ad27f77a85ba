//! Jobs: create, list, show, disable, enable, terminate, delete, and why
//! their queued tasks wait.

use super::{misrouted, AccountCall, Service};
use crate::api::{ApiError, Request, Response};
use crate::domain::job::{Job, JobCommand};
use crate::domain::pool::Pool;
use crate::server::supervisors;
use crate::store::StreamId;

impl Service {
    /// The job once it has no unfinished task, or when `wait_ms` is up.
    /// It looks again only when the log grew past what it read and the
    /// job's stream may be among what grew (a write mark: an atomic load),
    /// so a thousand waiting clients cost nothing between a job's changes.
    async fn wait_job(
        &self,
        stream: &StreamId,
        job: &crate::types::JobId,
        wait_ms: u32,
    ) -> Result<Response, ApiError> {
        let wait = u64::from(wait_ms.min(crate::api::WAIT_JOB_MS_MAX));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait);
        let store = self.core.store();
        let mark = crate::store::WriteMark::of(stream);
        let mut head = store.head_watch();
        loop {
            let seen = store.head();
            let state = self.show::<Job>(stream, job.as_str()).await?;
            if state.state.unfinished() == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(Response::Job(state));
            }
            loop {
                tokio::select! {
                    changed = head.changed() => if changed.is_err() {
                        // The store is closing: answer what was read.
                        return Ok(Response::Job(state));
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
                if store.written_since(&mark, seen) {
                    break;
                }
            }
        }
    }

    /// A job request of an account.
    pub(super) async fn jobs(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let ctx = || call.ctx(self);
        match request {
            Request::CreateJob { spec, .. } => {
                let (spec, slots) = self.job_spec_ready(call, spec.clone()).await?;
                let manager = spec.manager_task(slots);
                let stream = call.job_stream(&spec.id);
                let reply = Response::Created {
                    entity: stream.to_string(),
                };
                // The job and its manager in one append: a job is never
                // left without the manager it was created with.
                let tasks: Vec<_> = manager.into_iter().collect();
                let created = self
                    .idempotent(account, request, call.body, reply, |extra| async move {
                        self.core
                            .create_job_with_tasks(spec, tasks, ctx(), extra)
                            .await?;
                        Ok(())
                    })
                    .await?;
                Ok(created)
            }
            Request::ListJobs => Ok(Response::Jobs(
                self.list::<Job>(&format!("job/{account}/"))?,
            )),
            Request::ShowJob { job } => Ok(Response::Job(
                self.show::<Job>(&call.job_stream(job), job.as_str())
                    .await?,
            )),
            Request::WaitJob { job, wait_ms } => {
                self.wait_job(&call.job_stream(job), job, *wait_ms).await
            }
            Request::DisableJob { job, disable_tasks } => {
                self.exec::<Job>(
                    call.job_stream(job),
                    JobCommand::DisableJob {
                        disable_tasks: *disable_tasks,
                    },
                    ctx(),
                )
                .await
            }
            Request::EnableJob { job } => {
                self.exec::<Job>(call.job_stream(job), JobCommand::EnableJob, ctx())
                    .await
            }
            Request::TerminateJob { job, reason } => {
                self.exec::<Job>(
                    call.job_stream(job),
                    JobCommand::TerminateJob {
                        reason: reason.clone(),
                    },
                    ctx(),
                )
                .await
            }
            Request::UpdateJob { spec } => {
                let mut spec = spec.clone();
                spec.account = account.clone();
                self.exec::<Job>(
                    call.job_stream(&spec.id),
                    JobCommand::UpdateJob { spec },
                    ctx(),
                )
                .await
            }
            Request::DeleteJob { job } => {
                self.exec::<Job>(call.job_stream(job), JobCommand::DeleteJob, ctx())
                    .await
            }
            Request::ExplainJob { job } => {
                let stream = call.job_stream(job);
                let state = self.show::<Job>(&stream, job.as_str()).await?.state;
                let placement = &self.supervisors.placement;
                placement.caught_up(self.core.store().head()).await;
                let of = stream.clone();
                let groups = placement.inspect(move |s| s.job_waits(&of)).await?;
                let pool_key = match (groups.first(), state.spec.as_ref()) {
                    (Some((key, _)), _) => key.clone(),
                    (None, Some(spec)) => format!("{account}/{}", spec.pool),
                    (None, None) => String::new(),
                };
                Ok(Response::JobWaits {
                    job: job.clone(),
                    groups: groups.into_iter().map(|(_, g)| g).collect(),
                    pool: self.pool_context(&pool_key).await?,
                })
            }
            other => Err(misrouted(other)),
        }
    }

    /// A job spec with the caller's account in it, and the slots of a node
    /// of its pool: an existing pool, or its auto pool (under the job's
    /// id, its secrets sealed and packages checked), made with the job.
    pub(super) async fn job_spec_ready(
        &self,
        call: &AccountCall<'_>,
        mut spec: crate::domain::job::JobSpec,
    ) -> Result<(crate::domain::job::JobSpec, u32), ApiError> {
        let account = call.account;
        spec.account = account.clone();
        spec.bind_auto_pool();
        if let Some(auto) = spec.auto_pool.as_mut() {
            if let crate::domain::pool::ScaleSettings::Autoscale {
                evaluation_interval_secs,
                ..
            } = &auto.pool.scale
            {
                self.check_autoscale_interval(*evaluation_interval_secs)?;
            }
            auto.pool.secrets = self.seal_all(account, &auto.pool.id, &auto.pool.secrets)?;
            self.blobs
                .check_refs(account, &auto.pool.application_packages)
                .await?;
            let slots = auto.pool.node_size.task_slots;
            return Ok((spec, slots));
        }
        let pool = self
            .show::<Pool>(&call.pool_stream(&spec.pool), spec.pool.as_str())
            .await
            .map_err(|mut e| {
                e.message = format!(
                    "{}: a job runs on an existing pool; create it first (lote pool create), or give the job an auto pool",
                    e.message
                );
                e
            })?;
        let slots = pool.state.spec.map_or(1, |p| p.node_size.task_slots);
        Ok((spec, slots))
    }

    /// A pool's size and scaling, for the words of a wait reason.
    pub(super) async fn pool_context(
        &self,
        pool_key: &str,
    ) -> Result<crate::api::explain::PoolContext, ApiError> {
        let Some((account, pool)) = supervisors::split_pool_key(pool_key) else {
            return Ok(Default::default());
        };
        let state = self
            .existing::<Pool>(&StreamId::pool(&account, &pool))
            .await?
            .map(|v| v.state)
            .unwrap_or_default();
        Ok(crate::api::explain::PoolContext {
            pool: pool.to_string(),
            target_nodes: state.target_nodes,
            max_nodes: state.spec.as_ref().map_or(0, |s| s.node_count_max),
            resizing: state.resize != crate::domain::pool::ResizeState::Steady,
            autoscale: state.autoscale.is_some(),
        })
    }
}
