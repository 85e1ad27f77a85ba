//! The node supervisor: evicting, draining, removing and replacing nodes.

use super::*;

impl Sagas {
    /// Kills and requeues, or kills and fails, the given held tasks.
    pub(super) async fn release_tasks(
        &self,
        tasks: Vec<HeldTask>,
        deallocation: Deallocation,
        reason: String,
        component: &str,
    ) -> Result<(), CoreError> {
        let mut first_error = None;
        for (stream, attempt) in tasks {
            let outcome = match deallocation {
                Deallocation::TaskCompletion => continue,
                // Attempt 0: planned but not yet read back; the next event
                // (its TaskAssigned) brings it here again.
                Deallocation::Requeue if attempt == 0 => continue,
                Deallocation::Requeue => {
                    let command = TaskCommand::RequeueTask {
                        attempt,
                        reason: reason.clone(),
                    };
                    self.run::<Task>(&stream, command, component).await
                }
                Deallocation::Terminate => {
                    let command = TaskCommand::TerminateTask {
                        reason: reason.clone(),
                    };
                    self.run::<Task>(&stream, command, component).await
                }
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Applies a leaving or rebooting node's rule to the tasks it holds.
    pub(super) async fn evict(&self, pool_key: &str, node: &NodeId) -> Result<(), CoreError> {
        let (key, id) = (SharedStr::from(pool_key), node.clone());
        let found = self
            .placement
            .inspect(move |scheduler| {
                let n = scheduler.node(&key, &id)?;
                let rule = match (n.leaving, n.rebooting, n.unusable) {
                    (Some(d), _, _) => (d, format!("node {id} is leaving the pool")),
                    (None, true, _) => (Deallocation::Requeue, format!("node {id} is rebooting")),
                    (None, false, true) => (
                        Deallocation::Requeue,
                        format!("node {id} was lost (no heartbeat from its agent)"),
                    ),
                    (None, false, false) => return None,
                };
                Some((scheduler.held_on(&key, &id), rule))
            })
            .await?;
        let Some((held, (deallocation, reason))) = found else {
            return Ok(());
        };
        self.release_tasks(held, deallocation, reason, "node-supervisor")
            .await
    }

    /// Removes leaving nodes that hold no task any more: a local node's
    /// agent is stopped and its directory removed first.
    pub(super) fn finish_drained(self: &Rc<Self>) {
        let this = self.clone();
        self.spawn("removing drained nodes", async move {
            let drained = this.placement.inspect(|s| s.drained_leaving()).await?;
            for key in drained {
                if !this.removing.borrow_mut().insert(key.clone()) {
                    continue;
                }
                let again = this.clone();
                tokio::task::spawn_local(async move {
                    if let Err(e) = again.finish_removal(&key.0, &key.1).await {
                        tracing::warn!(node = %key.1, error = %e, "node removal failed; retried on restart");
                    }
                    again.removing.borrow_mut().remove(&key);
                });
            }
            Ok(())
        });
    }

    pub(super) async fn finish_removal(
        &self,
        pool_key: &str,
        node: &NodeId,
    ) -> Result<(), CoreError> {
        let Some((account, pool)) = split_pool_key(pool_key) else {
            return Ok(());
        };
        self.stop_local_agent(&account, &pool, node).await;
        let stream = StreamId::node(&account, &pool, node);
        self.run::<Node>(&stream, NodeCommand::FinishRemoval, "node-supervisor")
            .await
    }

    /// Stops a node's local agent (if it has one here) off the server's
    /// thread: the agent gets SIGTERM, then SIGKILL after a grace period.
    pub async fn stop_local_agent(&self, account: &AccountName, pool: &PoolId, node: &NodeId) {
        let (dir, account, pool, node) = (
            self.local.nodes_dir.clone(),
            account.clone(),
            pool.clone(),
            node.clone(),
        );
        let stopped =
            tokio::task::spawn_blocking(move || provider::stop_agent(&dir, &account, &pool, &node))
                .await;
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "stopping a local agent failed");
        }
    }

    /// Takes a node out at once with its tasks terminated: for a pool
    /// being deleted. Returns when the node is removed.
    pub async fn remove_now(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
    ) -> Result<(), CoreError> {
        let stream = StreamId::node(account, pool, node);
        let leave = NodeCommand::RemoveNode {
            deallocation: Deallocation::Terminate,
        };
        self.run::<Node>(&stream, leave, "pool-deletion").await?;
        let (pool_key, id) = (format!("{account}/{pool}"), node.clone());
        let held = self
            .placement
            .inspect(move |s| s.held_on(&pool_key, &id))
            .await?;
        self.release_tasks(
            held,
            Deallocation::Terminate,
            format!("pool {pool} was deleted"),
            "pool-deletion",
        )
        .await?;
        self.stop_local_agent(account, pool, node).await;
        self.run::<Node>(&stream, NodeCommand::FinishRemoval, "pool-deletion")
            .await
    }

    /// Brings a pool's nodes to its target, one reconciliation at a time
    /// per pool (a request during one runs it again after).
    /// A local pool's lost node is removed (its agent, if it still runs,
    /// is stopped and its directory deleted) and another takes its place
    /// once it is gone; a remote one waits for its agent to come back.
    pub(super) async fn replace_lost(
        &self,
        pool_key: &str,
        node: &NodeId,
    ) -> Result<(), CoreError> {
        let Some((account, pool)) = split_pool_key(pool_key) else {
            return Ok(());
        };
        let state = self
            .core
            .state::<Pool>(&StreamId::pool(&account, &pool))
            .await?
            .state;
        let local = state
            .spec
            .as_ref()
            .is_some_and(|s| s.provider == NodeProvider::Local);
        if !local || state.status != PoolStatus::Active {
            return Ok(());
        }
        self.heal.borrow_mut().insert(pool_key.to_string());
        let stream = StreamId::node(&account, &pool, node);
        let command = NodeCommand::RemoveNode {
            deallocation: Deallocation::Requeue,
        };
        self.run::<Node>(&stream, command, "node-supervisor").await
    }
}
