//! Auto pools: a pool a job made for itself is deleted, its nodes stopped,
//! once the job has ended (completed or deleted), unless it was kept
//! alive. After a restart, every pool whose job ended meanwhile.

use super::*;
use crate::domain::job::JobStatus;

impl Sagas {
    /// Deletes `job`'s auto pool if the job has ended.
    pub(super) fn end_auto_pool(self: &Rc<Self>, job: StreamId) {
        let this = self.clone();
        self.spawn("deleting a job's auto pool", async move {
            this.delete_auto_pool(&job).await
        });
    }

    /// The pools of jobs that ended while the server was down.
    pub(super) async fn sweep_auto_pools(&self, pool_keys: &[String]) -> Result<(), CoreError> {
        for key in pool_keys {
            let Some((account, pool)) = split_pool_key(key) else {
                continue;
            };
            // An auto pool has its job's id.
            let Ok(job) = crate::types::JobId::new(pool.as_str()) else {
                continue;
            };
            // Most pools are no job's: no actor is woken for them.
            let stream = StreamId::job(&account, &job);
            if self.core.exists::<Job>(&stream)? {
                self.delete_auto_pool(&stream).await?;
            }
        }
        Ok(())
    }

    async fn delete_auto_pool(&self, job: &StreamId) -> Result<(), CoreError> {
        let state = self.core.state::<Job>(job).await?.state;
        let Some(spec) = state.spec.as_ref() else {
            return Ok(());
        };
        let ended = matches!(state.status, JobStatus::Completed | JobStatus::Deleted);
        match spec.auto_pool.as_deref() {
            Some(auto) if ended && !auto.keep_alive => {}
            _ => return Ok(()),
        }
        let (account, pool) = (spec.account.clone(), spec.pool.clone());
        let stream = StreamId::pool(&account, &pool);
        let status = self.core.state::<Pool>(&stream).await?.state.status;
        if matches!(status, PoolStatus::Absent | PoolStatus::Deleted) {
            return Ok(());
        }
        tracing::info!(%job, %stream, "the job ended: deleting its auto pool");
        self.run::<Pool>(&stream, PoolCommand::DeletePool, "auto-pool")
            .await?;
        let key = format!("{account}/{pool}");
        let nodes = self.placement.inspect(move |s| s.nodes_of(&key)).await?;
        for node in nodes {
            self.remove_now(&account, &pool, &node).await?;
        }
        self.run::<Pool>(&stream, PoolCommand::FinishDeletion, "auto-pool")
            .await?;
        provider::remove_pool_dir(&self.local.nodes_dir, &account, &pool);
        Ok(())
    }
}
