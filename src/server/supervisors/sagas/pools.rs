//! The pool supervisor: bringing a pool's nodes to its target (local
//! agents started and stopped), one coalesced run per pool at a time.

use super::*;

impl Sagas {
    pub(super) fn reconcile(self: &Rc<Self>, pool_key: String) {
        self.coalesced(
            |s| &s.reconciling,
            pool_key,
            "a pool resize step",
            |this, key| async move { this.reconcile_once(&key).await },
        );
    }

    /// Runs `run` for `key` unless a run for it is under way, in which case
    /// that run is followed by one more (see [`Coalescer`]).
    pub(super) fn coalesced<K, F, Fut>(
        self: &Rc<Self>,
        which: fn(&Sagas) -> &Coalescer<K>,
        key: K,
        what: &'static str,
        run: F,
    ) where
        K: std::hash::Hash + Eq + Clone + std::fmt::Display + 'static,
        F: Fn(Rc<Sagas>, K) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), CoreError>>,
    {
        if !which(self).start(&key) {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_local(async move {
            loop {
                if let Err(e) = run(this.clone(), key.clone()).await {
                    tracing::warn!(%key, error = %e, "{what} failed; it is retried on the next change or restart");
                }
                if !which(&this).again(&key) {
                    break;
                }
            }
        });
    }

    pub(super) async fn reconcile_once(self: &Rc<Self>, pool_key: &str) -> Result<(), CoreError> {
        let Some((account, pool_id)) = split_pool_key(pool_key) else {
            return Ok(());
        };
        let pool_stream = StreamId::pool(&account, &pool_id);
        if !self.core.exists::<Pool>(&pool_stream)? {
            return Ok(());
        }
        // The picture must include this pool's latest events (our own
        // previous adds among them) before counting its nodes.
        self.placement.caught_up(self.core.store().head()).await;
        let pool = self.core.state::<Pool>(&pool_stream).await?.state;
        let Some(spec) = pool.spec.as_ref() else {
            return Ok(());
        };
        if pool.status != PoolStatus::Active {
            return Ok(());
        }
        let key = pool_key.to_string();
        let (nodes, mut index) = self
            .placement
            .inspect(move |s| (s.pool_nodes(&key), s.next_node_index(&key)))
            .await?;
        let heal = self.heal.borrow().contains(pool_key)
            && spec.provider == NodeProvider::Local
            && nodes.iter().all(|n| n.leaving.is_none());
        if heal {
            // The lost node is gone: bring the pool back to its target.
            self.heal.borrow_mut().remove(pool_key);
        }
        match pool.resize {
            ResizeState::Steady if !heal => return Ok(()),
            ResizeState::Steady => {}
            ResizeState::Stopping => {
                return self
                    .run::<Pool>(&pool_stream, PoolCommand::CompleteResize, "pool-supervisor")
                    .await
            }
            ResizeState::Resizing => {}
        }
        let leaving = nodes.iter().filter(|n| n.leaving.is_some()).count();
        let mut staying: Vec<_> = nodes.into_iter().filter(|n| n.leaving.is_none()).collect();
        let target = pool.target_nodes as usize;
        if staying.len() > target {
            // Idle nodes go first, then the least busy; among equals the
            // newest, so long-lived nodes (warm caches) stay.
            staying.sort_by(|a, b| (a.used, &b.node).cmp(&(b.used, &a.node)));
            for n in staying.iter().take(staying.len() - target) {
                let command = NodeCommand::RemoveNode {
                    deallocation: pool.deallocation,
                };
                let stream = StreamId::node(&account, &pool_id, &n.node);
                self.run::<Node>(&stream, command, "pool-supervisor")
                    .await?;
            }
            // Completed when the last of them is removed (NodeRemoved
            // brings this back).
            return Ok(());
        }
        if staying.len() < target && spec.provider == NodeProvider::Local {
            let wanted = (target - staying.len()).min(NODES_PER_ROUND_MAX);
            let mut added = Vec::new();
            for _ in 0..wanted {
                let node = loop {
                    let node = NodeId::new(format!("node-{index}"))
                        .map_err(|e| CoreError::Unavailable(e.to_string()))?;
                    index += 1;
                    let stream = StreamId::node(&account, &pool_id, &node);
                    let add = NodeCommand::AddNode {
                        account: account.clone(),
                        pool: pool_id.clone(),
                        node: node.clone(),
                        name: format!("{pool_id}-{node}"),
                    };
                    match self
                        .core
                        .execute::<Node>(&stream, add, self.ctx("pool-supervisor"))
                        .await
                    {
                        Ok(_) => break node,
                        Err(e) if e.rejection_code() == Some(RejectionCode::NodeExists) => continue,
                        Err(e) => return Err(e),
                    }
                };
                let cred = NodeCredential {
                    account: account.clone(),
                    pool: pool_id.clone(),
                    credential: auth::derive_secret(
                        &self.server_secret,
                        &format!("node:{account}/{pool_id}/{node}"),
                    ),
                    node: node.clone(),
                    tls_fingerprint: self.local.tls_fingerprint.clone(),
                };
                added.push(node.clone());
                if let Err(e) = provider::start_agent(
                    &self.local.nodes_dir,
                    &self.local.server_addr,
                    &cred,
                    spec.node_size.task_slots,
                ) {
                    // Unusable, with the reason for operators to see.
                    tracing::error!(%node, error = %e, "cannot start a local agent");
                    let stream = StreamId::node(&account, &pool_id, &node);
                    let unusable = NodeCommand::MarkUnusable {
                        reason: e.message.clone(),
                    };
                    self.run::<Node>(&stream, unusable, "pool-supervisor")
                        .await?;
                }
            }
            // Deleted meanwhile: what was just started must not outlive it
            // (the deletion listed the nodes before these existed).
            let now = self.core.state::<Pool>(&pool_stream).await?.state;
            if now.status != PoolStatus::Active {
                for node in &added {
                    self.remove_now(&account, &pool_id, node).await?;
                }
                return Ok(());
            }
            if staying.len() + wanted < target {
                self.reconciling.ask_again(&pool_key.to_string());
                return Ok(());
            }
        }
        if leaving == 0 {
            // Remote pools reach their size as agents join; nothing here
            // waits for them.
            self.run::<Pool>(&pool_stream, PoolCommand::CompleteResize, "pool-supervisor")
                .await?;
        }
        Ok(())
    }
}
