//! Pools: create, show, resize, delete, join tokens, and autoscale
//! (enable, evaluate now, history, replay).

use super::{internal, misrouted, AccountCall, Service};
use crate::actors::CoreError;
use crate::api::{ApiError, Request, Response};
use crate::domain::job::{Job, JobCommand};
use crate::domain::node::Node;
use crate::domain::pool::{Pool, PoolCommand};
use crate::domain::RejectionCode;
use crate::server::supervisors;
use crate::server::supervisors::autoscale::Evaluate;
use crate::server::supervisors::sagas::RemoveNodeNow;
use crate::types::{AccountName, PoolId};

fn ensure_formula_size(text: &str) -> Result<(), ApiError> {
    let max = crate::domain::autoscale::syntax::FORMULA_BYTES_MAX;
    if text.len() > max {
        return Err(ApiError::rejected(
            RejectionCode::InvalidValue,
            format!("autoscale formula is {} bytes; at most {max}", text.len()),
        ));
    }
    Ok(())
}

impl Service {
    /// A new pool: its formula's interval checked, its secrets sealed, its
    /// packages resolved, then created once per request id.
    async fn create_pool(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
        spec: &crate::domain::pool::PoolSpec,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let ctx = || call.ctx(self);
        if let crate::domain::pool::ScaleSettings::Autoscale {
            evaluation_interval_secs,
            ..
        } = &spec.scale
        {
            self.check_autoscale_interval(*evaluation_interval_secs)?;
        }
        let mut spec = spec.clone();
        spec.account = account.clone();
        spec.secrets = self.seal_all(account, &spec.id, &spec.secrets)?;
        self.blobs
            .check_refs(account, &spec.application_packages)
            .await?;
        let stream = call.pool_stream(&spec.id);
        let reply = Response::Created {
            entity: stream.to_string(),
        };
        // A local pool's nodes are started by the pool supervisor
        // once `PoolCreated` is in the log, as for any resize.
        self.idempotent(account, request, call.body, reply, |extra| async move {
            self.core
                .execute_with::<Pool>(&stream, PoolCommand::CreatePool { spec }, ctx(), extra)
                .await?;
            Ok(())
        })
        .await
    }

    /// A pool request of an account.
    pub(super) async fn pools(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        let ctx = || call.ctx(self);
        match request {
            Request::EvaluateAutoscale { .. }
            | Request::AutoscaleHistory { .. }
            | Request::ReplayAutoscale { .. } => self.autoscale_reads(call, request).await,
            Request::CreatePool { spec, .. } => self.create_pool(call, request, spec).await,
            Request::SetPoolSecret { .. } | Request::RemovePoolSecret { .. } => {
                self.pool_secrets(call, request).await
            }
            Request::ListPools => Ok(Response::Pools(
                self.list::<Pool>(&format!("pool/{account}/"))?,
            )),
            Request::ShowPool { pool } => Ok(Response::Pool(
                self.show::<Pool>(&call.pool_stream(pool), pool.as_str())
                    .await?,
            )),
            Request::ShowJoinToken { pool } => {
                let state = self
                    .show::<Pool>(&call.pool_stream(pool), pool.as_str())
                    .await?
                    .state;
                Ok(Response::JoinToken {
                    pool: pool.clone(),
                    token: self.join_token_to_print(account, pool, state.join_token_generation),
                })
            }
            Request::RotateJoinToken { pool } => {
                let outcome = self
                    .core
                    .execute::<Pool>(&call.pool_stream(pool), PoolCommand::RotateJoinToken, ctx())
                    .await?;
                Ok(Response::JoinToken {
                    pool: pool.clone(),
                    token: self.join_token_to_print(
                        account,
                        pool,
                        outcome.state.join_token_generation,
                    ),
                })
            }
            Request::ResizePool {
                pool,
                target_nodes,
                deallocation,
            } => {
                self.exec::<Pool>(
                    call.pool_stream(pool),
                    PoolCommand::ResizePool {
                        target_nodes: *target_nodes,
                        deallocation: *deallocation,
                    },
                    ctx(),
                )
                .await
            }
            Request::UpdatePool {
                pool,
                start_task,
                application_packages,
            } => {
                if let Some(packages) = application_packages {
                    self.blobs.check_refs(account, packages).await?;
                }
                let command = PoolCommand::UpdatePool {
                    start_task: start_task.clone(),
                    application_packages: application_packages.clone(),
                };
                self.exec::<Pool>(call.pool_stream(pool), command, ctx())
                    .await
            }
            Request::StopResize { pool } => {
                self.exec::<Pool>(call.pool_stream(pool), PoolCommand::StopResize, ctx())
                    .await
            }
            Request::EnableAutoscale {
                pool,
                formula,
                evaluation_interval_secs,
            } => {
                self.check_autoscale_interval(*evaluation_interval_secs)?;
                self.exec::<Pool>(
                    call.pool_stream(pool),
                    PoolCommand::EnableAutoscale {
                        formula: formula.clone(),
                        evaluation_interval_secs: *evaluation_interval_secs,
                    },
                    ctx(),
                )
                .await
            }
            Request::DisableAutoscale { pool } => {
                self.exec::<Pool>(call.pool_stream(pool), PoolCommand::DisableAutoscale, ctx())
                    .await
            }
            Request::DeletePool { pool, force } => {
                self.end_jobs_on(call, pool, *force).await?;
                let done: Result<Response, ApiError> = self
                    .exec::<Pool>(call.pool_stream(pool), PoolCommand::DeletePool, ctx())
                    .await;
                let done = done?;
                self.remove_nodes(account, pool).await?;
                let finished = self
                    .core
                    .execute::<Pool>(
                        &call.pool_stream(pool),
                        PoolCommand::FinishDeletion,
                        self.system_ctx(),
                    )
                    .await?;
                drop(done);
                supervisors::provider::remove_pool_dir(&self.supervisors.nodes_dir, account, pool);
                Ok(super::done(&call.pool_stream(pool), finished))
            }
            other => Err(misrouted(other)),
        }
    }

    /// Removes every node of a pool being deleted: their tasks are
    /// terminated, local agents stopped and their directories removed.
    pub(super) async fn remove_nodes(
        &self,
        account: &AccountName,
        pool: &PoolId,
    ) -> Result<(), ApiError> {
        let nodes = self.list::<Node>(&format!("node/{account}/{pool}/"))?;
        for n in nodes {
            let Some(node) = n.state.id.clone() else {
                continue;
            };
            let remove = RemoveNodeNow {
                account: account.clone(),
                pool: pool.clone(),
                node,
            };
            self.supervisors
                .sagas
                .send(remove)
                .await
                .map_err(internal)??;
        }
        Ok(())
    }

    /// Refuses an evaluation interval under this server's minimum.
    pub(super) fn check_autoscale_interval(&self, secs: u64) -> Result<(), ApiError> {
        let min = self.supervisors.autoscale.min_interval_secs;
        if secs < min {
            return Err(ApiError::rejected(
                RejectionCode::InvalidValue,
                format!(
                    "autoscale interval {secs}s is under this server's minimum of {min}s (lote server --autoscale-min-interval-secs)"
                ),
            ));
        }
        Ok(())
    }

    /// A pool's autoscale: evaluate now, the run history, a replay over
    /// its recorded past.
    async fn autoscale_reads(
        &self,
        call: &AccountCall<'_>,
        request: &Request,
    ) -> Result<Response, ApiError> {
        let account = call.account;
        match request {
            Request::EvaluateAutoscale { pool, formula } => {
                if let Some(text) = formula {
                    ensure_formula_size(text)?;
                }
                self.show::<Pool>(&call.pool_stream(pool), pool.as_str())
                    .await?;
                let key = format!("{account}/{pool}");
                let ask = Evaluate {
                    pool_key: key,
                    formula: formula.clone(),
                };
                match self.supervisors.autoscaler.send(ask).await {
                    Ok(Some(e)) => Ok(Response::AutoscaleEvaluation(e)),
                    Err(e) => Err(internal(e)),
                    Ok(None) => Err(ApiError::rejected(
                        RejectionCode::PoolBeingDeleted,
                        format!("pool {pool} is being deleted"),
                    )),
                }
            }
            Request::AutoscaleHistory { pool, limit } => {
                let stream = call.pool_stream(pool);
                self.show::<Pool>(&stream, pool.as_str()).await?;
                let runs = supervisors::autoscale::history(
                    self.core.store(),
                    &stream,
                    (*limit).clamp(1, 10_000) as usize,
                )
                .map_err(internal)?;
                Ok(Response::AutoscaleRuns(runs))
            }
            Request::ReplayAutoscale {
                pool,
                formula,
                from,
                to,
                every_secs,
            } => {
                ensure_formula_size(formula)?;
                let stream = call.pool_stream(pool);
                self.show::<Pool>(&stream, pool.as_str()).await?;
                let store = self.core.store().clone();
                let (formula, from, to) = (formula.clone(), *from, *to);
                let every = std::time::Duration::from_secs(*every_secs);
                let period = self.supervisors.autoscale.sample_period;
                // Reading a month of samples and evaluating at every step
                // is work for a blocking thread, not the server's one.
                let steps = tokio::task::spawn_blocking(move || {
                    supervisors::autoscale::replay(
                        &store, &stream, &formula, from, to, every, period,
                    )
                })
                .await
                .map_err(internal)?
                .map_err(|e| ApiError::rejected(RejectionCode::InvalidValue, e))?;
                Ok(Response::AutoscaleReplay(steps))
            }
            other => Err(misrouted(other)),
        }
    }

    /// Jobs on a pool about to be deleted that still have queued or running
    /// tasks: refused, or with `force` terminated, so that no task is left
    /// waiting for a pool that is gone.
    async fn end_jobs_on(
        &self,
        call: &AccountCall<'_>,
        pool: &crate::types::PoolId,
        force: bool,
    ) -> Result<(), ApiError> {
        self.show::<Pool>(&call.pool_stream(pool), pool.as_str())
            .await?;
        let jobs: Vec<crate::types::JobId> = self
            .list::<Job>(&format!("job/{}/", call.account))?
            .into_iter()
            .filter(|j| j.state.unfinished() > 0)
            .filter_map(|j| j.state.spec.filter(|s| &s.pool == pool).map(|s| s.id))
            .collect();
        if jobs.is_empty() {
            return Ok(());
        }
        let names = jobs
            .iter()
            .map(|j| j.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if !force {
            return Err(ApiError::rejected(
                RejectionCode::PoolInUse,
                format!(
                    "jobs {names} still have queued or running tasks on pool {pool}; terminate them first, or delete the pool with --force (their jobs are terminated)"
                ),
            ));
        }
        for job in &jobs {
            let command = JobCommand::TerminateJob {
                reason: format!("pool {pool} was deleted"),
            };
            match self
                .core
                .execute::<Job>(&call.job_stream(job), command, call.ctx(self))
                .await
            {
                Ok(_) => {}
                // Already terminating: its tasks are ending anyway.
                Err(CoreError::Rejected(r)) if r.code == RejectionCode::JobBeingTerminated => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
