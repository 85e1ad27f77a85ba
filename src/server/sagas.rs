//! The supervisors that carry out what the log says is in progress: pools
//! resizing, nodes leaving or rebooting, jobs terminating, disabled, past
//! their wall-clock limit, or due to complete.
//!
//! Each reaction is a command through an actor, recorded like any other,
//! so replay reproduces it and nothing changes behind the log. They run on
//! the placement feed, after the scheduler has folded the event, so they
//! see the same picture placement plans on. After a restart, `on_ready`
//! picks up whatever was half-way: a resize, a node still leaving, a job
//! still terminating, a deadline that passed while the server was down.
//! Every step tolerates having been done already, since a reaction and a
//! restart (or two events) may ask for the same step twice.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::actors::{Core, CoreError, Registered};
use crate::api::auth;
use crate::compute::agent::NodeCredential;
use crate::compute::scheduler::HeldTask;
use crate::domain::decode_event;
use crate::domain::job::{DisableTasks, Job, JobCommand, JobEvent};
use crate::domain::node::{Node, NodeCommand, NodeEvent};
use crate::domain::pool::{Deallocation, NodeProvider, Pool, PoolCommand, PoolStatus, ResizeState};
use crate::domain::task::{Task, TaskCommand};
use crate::domain::{Ctx, RejectionCode};
use crate::store::{Envelope, StreamId, StreamKind};
use crate::types::{AccountName, NodeId, PoolId, Timestamp};

use super::liveness::LOST_REASON;
use super::placement::{Placement, Reactor};
use super::provider;

/// Where local nodes live and where their agents connect.
#[derive(Clone)]
pub struct Local {
    /// The nodes directory (`--nodes-dir`).
    pub nodes_dir: std::path::PathBuf,
    pub server_addr: String,
}

/// Most nodes one reconciliation starts at once; a resize to more goes on
/// in the next round, so one request cannot fork thousands of processes
/// in one go.
const NODES_PER_ROUND_MAX: usize = 64;

pub struct Sagas {
    core: Core,
    placement: Rc<Placement>,
    local: Local,
    server_secret: String,
    /// Pools being reconciled.
    reconciling: Coalescer<String>,
    /// Jobs whose completion is being checked: a round of finished tasks
    /// asks the job's actor once, not once per task.
    completing: Coalescer<StreamId>,
    /// Unfinished tasks (active or running) of each job neither completed
    /// nor deleted, folded from the log as the job's own counts are.
    unfinished: JobCounts,
    /// Nodes whose removal is under way.
    removing: RefCell<HashSet<(String, NodeId)>>,
    /// Jobs with a wall-clock timer set.
    timers: RefCell<HashSet<StreamId>>,
    /// Local pools with a lost node being replaced: brought back to their
    /// target once it is gone, even when no resize is under way.
    heal: RefCell<HashSet<String>>,
}

/// A job as [`Sagas`] follows it, to know when to ask whether it is due
/// for completion (the job's actor decides, as it always has).
#[derive(Default)]
struct JobCount {
    /// Tasks active or running.
    unfinished: u64,
    /// Tasks ever added.
    added: u64,
    /// Its spec says to complete it when all its tasks have.
    completes_when_done: bool,
    terminating: bool,
}

impl JobCount {
    fn may_be_due(&self) -> bool {
        self.unfinished == 0 && (self.terminating || (self.completes_when_done && self.added > 0))
    }
}

/// Every job neither completed nor deleted, followed from the log.
#[derive(Default)]
struct JobCounts(RefCell<HashMap<StreamId, JobCount>>);

impl JobCounts {
    /// Folds a job event; true when it may have made the job due for
    /// completion: its last unfinished task ended (or it was enabled with
    /// none left) and it is terminating or completes when its tasks do. The job's actor is asked only then, not at every
    /// finished task (which would read back two count events per task).
    fn fold(&self, envelope: &Envelope) -> bool {
        use crate::domain::task::TaskBucket as B;
        if envelope.stream.kind() != StreamKind::Job {
            return false;
        }
        let mut counts = self.0.borrow_mut();
        let event = envelope.event_type.as_str();
        if event == "JobCreated" {
            let Ok(JobEvent::JobCreated { spec, .. }) =
                decode_event::<JobEvent>(StreamKind::Job, envelope)
            else {
                return false;
            };
            let count = JobCount {
                completes_when_done: spec.on_all_tasks_complete
                    == crate::domain::job::OnAllTasksComplete::TerminateJob,
                ..JobCount::default()
            };
            counts.insert(envelope.stream.clone(), count);
            return false;
        }
        if matches!(event, "JobCompleted" | "JobDeleted") {
            counts.remove(&envelope.stream);
            return false;
        }
        let Some(count) = counts.get_mut(&envelope.stream) else {
            return false;
        };
        match event {
            "JobTaskAdded" => {
                count.unfinished += 1;
                count.added += 1;
                false
            }
            "JobTerminating" => {
                count.terminating = true;
                false
            }
            "JobEnabled" => count.may_be_due(),
            "JobTaskCountsChanged" => {
                let Ok(JobEvent::JobTaskCountsChanged { from, to, .. }) =
                    decode_event::<JobEvent>(StreamKind::Job, envelope)
                else {
                    return false;
                };
                let unfinished = |b: &Option<B>| matches!(b, Some(B::Active | B::Running));
                match (unfinished(&from), unfinished(&to)) {
                    (false, true) => {
                        count.unfinished += 1;
                        false
                    }
                    (true, false) => {
                        count.unfinished = count.unfinished.saturating_sub(1);
                        count.may_be_due()
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// The jobs that may be due now.
    fn due(&self) -> Vec<StreamId> {
        self.0
            .borrow()
            .iter()
            .filter(|(_, count)| count.may_be_due())
            .map(|(job, _)| job.clone())
            .collect()
    }
}

/// Work asked for by key while the same key's work may be under way: one
/// run at a time per key, and one more after it when asked meanwhile, so
/// a burst of asks costs at most two runs and the last ask is never lost.
struct Coalescer<K>(RefCell<HashMap<K, bool>>);

impl<K> Default for Coalescer<K> {
    fn default() -> Self {
        Coalescer(RefCell::default())
    }
}

impl<K: std::hash::Hash + Eq + Clone> Coalescer<K> {
    /// Whether the caller should start a run for `key`; false when one is
    /// under way, which then runs once more.
    fn start(&self, key: &K) -> bool {
        let mut running = self.0.borrow_mut();
        if let Some(again) = running.get_mut(key) {
            *again = true;
            return false;
        }
        running.insert(key.clone(), false);
        true
    }

    /// From within a run: run once more after it.
    fn ask_again(&self, key: &K) {
        self.0.borrow_mut().insert(key.clone(), true);
    }

    /// Called at the end of a run: whether to run again (it was asked for
    /// meanwhile); false, and the key is free, otherwise.
    fn again(&self, key: &K) -> bool {
        let mut running = self.0.borrow_mut();
        match running.get_mut(key) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                running.remove(key);
                false
            }
        }
    }
}

/// `ACCOUNT/POOL`, the key pools go by in placement's picture.
pub(super) fn split_pool_key(key: &str) -> Option<(AccountName, PoolId)> {
    let (account, pool) = key.split_once('/')?;
    Some((AccountName::new(account).ok()?, PoolId::new(pool).ok()?))
}

/// A refusal that means the step was done already (or made moot).
fn moot(e: &CoreError) -> bool {
    matches!(
        e.rejection_code(),
        Some(
            RejectionCode::StaleAttempt
                | RejectionCode::TaskCompleted
                | RejectionCode::TaskNotFound
                | RejectionCode::TaskStateConflict
                | RejectionCode::NodeStateConflict
                | RejectionCode::NodeNotFound
                | RejectionCode::NodeExists
                | RejectionCode::JobNotActive
                | RejectionCode::JobNotFound
                | RejectionCode::JobBeingTerminated
                | RejectionCode::JobCompleted
                | RejectionCode::PoolNotResizing
                | RejectionCode::PoolBeingDeleted
                | RejectionCode::PoolNotFound
        )
    )
}

impl Sagas {
    pub fn new(core: Core, placement: Rc<Placement>, local: Local, server_secret: String) -> Self {
        Sagas {
            core,
            placement,
            local,
            server_secret,
            reconciling: Coalescer::default(),
            completing: Coalescer::default(),
            unfinished: JobCounts::default(),
            removing: RefCell::default(),
            timers: RefCell::default(),
            heal: RefCell::default(),
        }
    }

    pub fn local(&self) -> &Local {
        &self.local
    }

    fn ctx(&self, component: &str) -> Ctx {
        Ctx::system(self.core.clock().as_ref(), component)
    }

    /// Runs a command, logging (not failing on) a refusal that means it was
    /// done already; other errors are returned.
    async fn run<A: Registered>(
        &self,
        stream: &StreamId,
        command: A::Command,
        component: &str,
    ) -> Result<(), CoreError> {
        match self
            .core
            .execute::<A>(stream, command, self.ctx(component))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if moot(&e) => {
                tracing::debug!(%stream, error = %e, "step already done");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn spawn(
        self: &Rc<Self>,
        what: &'static str,
        f: impl std::future::Future<Output = Result<(), CoreError>> + 'static,
    ) {
        tokio::task::spawn_local(async move {
            if let Err(e) = f.await {
                tracing::warn!(error = %e, "{what} failed; it is retried on the next change or restart");
            }
        });
    }

    // ---- tasks held on a node ----------------------------------------

    /// Kills and requeues, or kills and fails, the given held tasks.
    async fn release_tasks(
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
    async fn evict(&self, pool_key: &str, node: &NodeId) -> Result<(), CoreError> {
        let (held, rule) = {
            let scheduler = self.placement.scheduler();
            let Some(n) = scheduler.node(pool_key, node) else {
                return Ok(());
            };
            let rule = match (n.leaving, n.rebooting, n.unusable) {
                (Some(d), _, _) => (d, format!("node {node} is leaving the pool")),
                (None, true, _) => (Deallocation::Requeue, format!("node {node} is rebooting")),
                (None, false, true) => (
                    Deallocation::Requeue,
                    format!("node {node} was lost (no heartbeat from its agent)"),
                ),
                (None, false, false) => return Ok(()),
            };
            (scheduler.held_on(pool_key, node), rule)
        };
        self.release_tasks(held, rule.0, rule.1, "node-supervisor")
            .await
    }

    /// Removes leaving nodes that hold no task any more: a local node's
    /// agent is stopped and its directory removed first.
    fn finish_drained(self: &Rc<Self>) {
        let drained = self.placement.scheduler().drained_leaving();
        for key in drained {
            if !self.removing.borrow_mut().insert(key.clone()) {
                continue;
            }
            let this = self.clone();
            tokio::task::spawn_local(async move {
                if let Err(e) = this.finish_removal(&key.0, &key.1).await {
                    tracing::warn!(node = %key.1, error = %e, "node removal failed; retried on restart");
                }
                this.removing.borrow_mut().remove(&key);
            });
        }
    }

    async fn finish_removal(&self, pool_key: &str, node: &NodeId) -> Result<(), CoreError> {
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
        let pool_key = format!("{account}/{pool}");
        let held = self.placement.scheduler().held_on(&pool_key, node);
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

    // ---- pools --------------------------------------------------------

    /// Brings a pool's nodes to its target, one reconciliation at a time
    /// per pool (a request during one runs it again after).
    /// A local pool's lost node is removed (its agent, if it still runs,
    /// is stopped and its directory deleted) and another takes its place
    /// once it is gone; a remote one waits for its agent to come back.
    async fn replace_lost(&self, pool_key: &str, node: &NodeId) -> Result<(), CoreError> {
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

    fn reconcile(self: &Rc<Self>, pool_key: String) {
        self.coalesced(
            |s| &s.reconciling,
            pool_key,
            "a pool resize step",
            |this, key| async move { this.reconcile_once(&key).await },
        );
    }

    /// Runs `run` for `key` unless a run for it is under way, in which case
    /// that run is followed by one more (see [`Coalescer`]).
    fn coalesced<K, F, Fut>(
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

    async fn reconcile_once(self: &Rc<Self>, pool_key: &str) -> Result<(), CoreError> {
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
        let heal = self.heal.borrow().contains(pool_key)
            && spec.provider == NodeProvider::Local
            && self
                .placement
                .scheduler()
                .pool_nodes(pool_key)
                .iter()
                .all(|n| n.leaving.is_none());
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
        let nodes = self.placement.scheduler().pool_nodes(pool_key);
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
            let mut index = self.placement.scheduler().next_node_index(pool_key);
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

    // ---- jobs ---------------------------------------------------------

    /// Terminates every unfinished task of a job (running ones are killed
    /// by their agents, which are told at their next poll).
    async fn terminate_job_tasks(&self, job: &StreamId, reason: String) -> Result<(), CoreError> {
        let (queued, held) = self.placement.scheduler().tasks_of_job(job);
        let mut first_error = None;
        for stream in queued.into_iter().chain(held.into_iter().map(|(s, _)| s)) {
            let command = TaskCommand::TerminateTask {
                reason: reason.clone(),
            };
            if let Err(e) = self.run::<Task>(&stream, command, "job-supervisor").await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A disabled job's running tasks: requeued, terminated or left to
    /// finish, as the disable asked.
    async fn disable_job_tasks(&self, job: &StreamId, how: DisableTasks) -> Result<(), CoreError> {
        let deallocation = match how {
            DisableTasks::Requeue => Deallocation::Requeue,
            DisableTasks::Terminate => Deallocation::Terminate,
            DisableTasks::Wait => return Ok(()),
        };
        let (_, held) = self.placement.scheduler().tasks_of_job(job);
        self.release_tasks(
            held,
            deallocation,
            "its job was disabled".into(),
            "job-supervisor",
        )
        .await
    }

    /// Completes the job if it is due; asks made while a check runs make
    /// one more check after it.
    fn complete_job(self: &Rc<Self>, job: StreamId) {
        self.coalesced(
            |s| &s.completing,
            job,
            "completing a job",
            |this, job| async move { this.complete_if_due(&job).await },
        );
    }

    /// The job-completion supervisor: a job whose tasks have all finished,
    /// and that asked to complete then (or is terminating), is completed.
    /// The job's own `completion_due` says whether it is due.
    async fn complete_if_due(&self, job: &StreamId) -> Result<(), CoreError> {
        let state = self.core.state::<Job>(job).await?;
        if state.state.completion_due().is_none() {
            return Ok(());
        }
        let command = JobCommand::CompleteJob {
            reason: "all tasks finished".into(),
        };
        self.run::<Job>(job, command, "job-completion").await
    }

    /// Terminates a job when it runs past its maximum wall-clock time.
    fn set_deadline(self: &Rc<Self>, job: StreamId, deadline: Timestamp) {
        if !self.timers.borrow_mut().insert(job.clone()) {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_local(async move {
            let now = this.core.clock().now();
            let wait = deadline.as_micros().saturating_sub(now.as_micros()).max(0) as u64;
            tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
            this.timers.borrow_mut().remove(&job);
            let Ok(state) = this.core.state::<Job>(&job).await else {
                return;
            };
            let Some(secs) = state
                .state
                .spec
                .as_ref()
                .and_then(|s| s.max_wall_clock_secs)
            else {
                return;
            };
            let command = JobCommand::TerminateJob {
                reason: format!("the job ran past its maximum wall-clock time of {secs}s"),
            };
            if let Err(e) = this.run::<Job>(&job, command, "job-wall-clock").await {
                tracing::warn!(%job, error = %e, "cannot terminate a job past its wall-clock time");
            }
        });
    }
}

impl Reactor for Sagas {
    fn on_ready(self: Rc<Self>) {
        let (pools, leaving_or_rebooting, deadlines) = {
            let scheduler = self.placement.scheduler();
            let pools = scheduler.pool_keys();
            let mut nodes = Vec::new();
            for key in &pools {
                for n in scheduler.pool_nodes(key) {
                    let unusable = scheduler.node(key, &n.node).is_some_and(|s| s.unusable);
                    if n.leaving.is_some() || n.rebooting || unusable {
                        nodes.push((key.clone(), n.node));
                    }
                }
            }
            (pools, nodes, scheduler.job_deadlines())
        };
        for key in pools {
            self.reconcile(key);
        }
        for (key, node) in leaving_or_rebooting {
            let this = self.clone();
            self.spawn("carrying on a node's removal", async move {
                this.evict(&key, &node).await?;
                // A lost node the last run had not replaced yet.
                let Some((account, pool)) = split_pool_key(&key) else {
                    return Ok(());
                };
                let state = this
                    .core
                    .state::<Node>(&StreamId::node(&account, &pool, &node))
                    .await?
                    .state;
                let lost = state.state == crate::domain::node::NodeState::Unusable
                    && state
                        .unusable_reason
                        .is_some_and(|r| r.starts_with(LOST_REASON));
                if lost {
                    this.replace_lost(&key, &node).await?;
                }
                Ok(())
            });
        }
        self.finish_drained();
        // Jobs whose last task ended just before the stop: completed now if
        // due (the job's actor decides).
        for job in self.unfinished.due() {
            self.complete_job(job);
        }
        for (job, deadline) in deadlines {
            self.set_deadline(job, deadline);
        }
        // Jobs left terminating: their remaining tasks. The picture has
        // them from its catch-up; no second read of the log.
        let terminating = self.placement.scheduler().terminating_jobs();
        let this = self.clone();
        self.spawn("carrying on job terminations", async move {
            for job in terminating {
                this.terminate_job_tasks(&job, "its job is terminating".into())
                    .await?;
                this.complete_if_due(&job).await?;
            }
            Ok(())
        });
    }

    fn on_event(self: Rc<Self>, envelope: &Envelope) {
        let stream = envelope.stream.clone();
        let ids = stream.segments();
        match envelope.event_type.as_str() {
            "PoolCreated" | "PoolResized" | "PoolResizeStopped" => {
                self.reconcile(ids[..2].join("/"));
            }
            "NodeRemoved" => {
                self.reconcile(ids[..2].join("/"));
            }
            "PoolDeleted" => {
                // Any node the deletion did not see (started as it ran).
                let key = ids[..2].join("/");
                let left = self.placement.scheduler().nodes_of(&key);
                if let Some((account, pool)) = split_pool_key(&key) {
                    let this = self.clone();
                    self.spawn("removing a deleted pool's last nodes", async move {
                        for node in left {
                            this.remove_now(&account, &pool, &node).await?;
                        }
                        Ok(())
                    });
                }
            }
            "NodeUnusable" => {
                let Ok(node) = NodeId::new(ids[2]) else {
                    return;
                };
                let lost = matches!(
                    crate::domain::decode_event::<NodeEvent>(StreamKind::Node, envelope),
                    Ok(NodeEvent::NodeUnusable { reason, .. }) if reason.starts_with(LOST_REASON)
                );
                let key = ids[..2].join("/");
                let this = self.clone();
                self.spawn("requeuing a lost node's tasks", async move {
                    this.evict(&key, &node).await?;
                    if lost {
                        this.replace_lost(&key, &node).await?;
                    }
                    Ok(())
                });
            }
            "NodeLeavingPool" | "NodeRebooting" => {
                let Ok(node) = NodeId::new(ids[2]) else {
                    return;
                };
                let key = ids[..2].join("/");
                let this = self.clone();
                self.spawn("releasing a node's tasks", async move {
                    this.evict(&key, &node).await?;
                    this.finish_drained();
                    Ok(())
                });
                self.finish_drained();
            }
            "TaskAssigned" => {
                // Planned before its node began to leave or reboot.
                let holder = self.placement.scheduler().holder(&stream);
                if let Some((key, node)) = holder {
                    let affected = self
                        .placement
                        .scheduler()
                        .node(&key, &node)
                        .is_some_and(|n| {
                            n.rebooting
                                || n.unusable
                                || matches!(n.leaving, Some(d) if d != Deallocation::TaskCompletion)
                        });
                    if affected {
                        let this = self.clone();
                        self.spawn("releasing a late assignment", async move {
                            this.evict(&key, &node).await
                        });
                    }
                }
            }
            "TaskCompleted" | "TaskTerminated" | "TaskRequeued" | "TaskDeleted" => {
                self.finish_drained();
            }
            "JobCreated" => {
                self.unfinished.fold(envelope);
                let deadline = self
                    .placement
                    .scheduler()
                    .job_deadlines()
                    .into_iter()
                    .find(|(s, _)| s == &stream);
                if let Some((job, deadline)) = deadline {
                    self.set_deadline(job, deadline);
                }
            }
            "JobTerminating" | "JobDeleted" => {
                self.unfinished.fold(envelope);
                let reason = match decode_event::<JobEvent>(StreamKind::Job, envelope) {
                    Ok(JobEvent::JobTerminating { reason, .. }) => {
                        format!("its job is terminating: {reason}")
                    }
                    _ => "its job was deleted".to_string(),
                };
                let this = self.clone();
                self.spawn("terminating a job's tasks", async move {
                    this.terminate_job_tasks(&stream, reason).await?;
                    this.complete_if_due(&stream).await
                });
            }
            "JobDisabled" => {
                let Ok(JobEvent::JobDisabled { disable_tasks, .. }) =
                    decode_event::<JobEvent>(StreamKind::Job, envelope)
                else {
                    return;
                };
                let this = self.clone();
                self.spawn("releasing a disabled job's tasks", async move {
                    this.disable_job_tasks(&stream, disable_tasks).await
                });
            }
            "JobTaskCountsChanged" | "JobEnabled" => {
                if self.unfinished.fold(envelope) {
                    self.complete_job(stream);
                }
            }
            _ => {
                self.unfinished.fold(envelope);
            }
        }
    }

    fn on_history(self: Rc<Self>, envelope: &Envelope) {
        self.unfinished.fold(envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::{Coalescer, JobCounts};
    use crate::domain::job::{JobEvent, JobSpec, OnAllTasksComplete};
    use crate::domain::task::TaskBucket as B;
    use crate::domain::Ctx;
    use crate::store::{Envelope, StreamId};
    use crate::types::{AccountName, JobId, PoolId, Principal, TaskId, Timestamp};

    fn envelope(stream: &StreamId, event: &JobEvent) -> Envelope {
        let ctx = Ctx::live(
            &crate::clock::SystemClock,
            Principal::Admin,
            crate::clock::new_request_id(),
        );
        crate::domain::to_envelope(event, stream, (1, 1), &ctx).unwrap()
    }

    #[test]
    fn a_job_is_asked_about_only_when_its_last_unfinished_task_ends() {
        let counts = JobCounts::default();
        let account = AccountName::new("acme").unwrap();
        let job = |name: &str, policy| {
            let id = JobId::new(name).unwrap();
            let stream = StreamId::job(&account, &id);
            let spec = JobSpec {
                on_all_tasks_complete: policy,
                ..JobSpec::on_pool(id, account.clone(), PoolId::new("p").unwrap())
            };
            let created = JobEvent::JobCreated {
                spec,
                at: Timestamp::EPOCH,
            };
            assert!(!counts.fold(&envelope(&stream, &created)));
            stream
        };
        let fold = |stream: &StreamId, event: JobEvent| counts.fold(&envelope(stream, &event));
        let added = || JobEvent::JobTaskAdded {
            task: TaskId::new("t").unwrap(),
            at: Timestamp::EPOCH,
        };
        let moved = |from, to| JobEvent::JobTaskCountsChanged {
            task: TaskId::new("t").unwrap(),
            from,
            to,
        };
        let done = job("done", OnAllTasksComplete::TerminateJob);
        assert!(!fold(&done, added()));
        assert!(!fold(&done, added()));
        assert!(!fold(&done, moved(Some(B::Active), Some(B::Running))));
        assert!(
            !fold(&done, moved(Some(B::Running), Some(B::Succeeded))),
            "one left"
        );
        // A retried task goes back to active: still one left after it.
        assert!(!fold(&done, moved(Some(B::Failed), Some(B::Active))));
        assert!(!fold(&done, moved(Some(B::Active), Some(B::Failed))));
        assert!(counts.due().is_empty());
        assert!(
            fold(&done, moved(Some(B::Active), None)),
            "the last one deleted"
        );
        assert_eq!(counts.due(), [done.clone()]);
        // Completed: no longer followed.
        let completed = JobEvent::JobCompleted {
            reason: "all tasks completed".into(),
            at: Timestamp::EPOCH,
        };
        assert!(!fold(&done, completed));
        assert!(!fold(&done, moved(Some(B::Running), Some(B::Succeeded))));
        assert!(counts.due().is_empty());

        // A job that stays active when its tasks are done is never asked,
        // unless it is terminating.
        let stays = job("stays", OnAllTasksComplete::NoAction);
        assert!(!fold(&stays, added()));
        assert!(!fold(&stays, moved(Some(B::Active), Some(B::Succeeded))));
        assert!(!fold(&stays, added()));
        let terminating = JobEvent::JobTerminating {
            reason: "asked".into(),
            at: Timestamp::EPOCH,
        };
        assert!(!fold(&stays, terminating));
        assert!(fold(&stays, moved(Some(B::Active), Some(B::Failed))));
        // Enabled with nothing left: asked.
        let idle = job("idle", OnAllTasksComplete::TerminateJob);
        assert!(
            !fold(
                &idle,
                JobEvent::JobEnabled {
                    at: Timestamp::EPOCH
                }
            ),
            "no task yet"
        );
        assert!(!fold(&idle, added()));
        assert!(fold(&idle, moved(Some(B::Active), Some(B::Succeeded))));
        assert!(fold(
            &idle,
            JobEvent::JobEnabled {
                at: Timestamp::EPOCH
            }
        ));
    }

    #[test]
    fn asks_during_a_run_make_one_more_run_and_none_is_lost() {
        let c = Coalescer::<&str>::default();
        assert!(c.start(&"job"), "the first ask runs");
        assert!(!c.start(&"job"), "an ask while it runs waits");
        assert!(!c.start(&"job"), "so does a second");
        assert!(c.start(&"other"), "another key runs at once");
        assert!(c.again(&"job"), "the asks meanwhile make one more run");
        assert!(!c.again(&"job"), "and only one");
        assert!(c.start(&"job"), "a finished key runs again when asked");
        assert!(!c.again(&"job"));
        assert!(!c.again(&"other"));
        assert!(c.start(&"pool"));
        c.ask_again(&"pool");
        assert!(c.again(&"pool"), "a run can ask for the next itself");
        assert!(!c.again(&"pool"));
    }
}
