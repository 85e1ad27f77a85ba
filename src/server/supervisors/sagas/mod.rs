//! The supervisors that carry out what the log says is in progress: pools
//! resizing, nodes leaving or rebooting, jobs terminating, disabled, past
//! their wall-clock limit, or due to complete.
//!
//! Each reaction is a command through an actor, recorded like any other,
//! so replay reproduces it and nothing changes behind the log. The
//! [`SagaSupervisor`] actor gets placement's feed a batch at a time, after
//! the scheduler has folded it, and asks placement's picture (which tasks a
//! node holds, a pool's nodes) with a message when a step needs it. Its
//! steps are futures that await entity actors; they share the actor's
//! bookkeeping (what runs, what is coalesced) on the server's thread and
//! nothing else. After a restart, `CaughtUp` picks up whatever was half-way: a resize, a node still leaving, a job
//! still terminating, a deadline that passed while the server was down.
//! Every step tolerates having been done already, since a reaction and a
//! restart (or two events) may ask for the same step twice.

mod auto_pools;
mod coalesce;
mod jobs;
mod nodes;
mod pools;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use actix::prelude::*;

use crate::actors::{Core, CoreError, Registered};
use crate::api::agent::NodeCredential;
use crate::api::auth;
use crate::domain::decode_event;
use crate::domain::job::{DisableTasks, Job, JobCommand, JobEvent};
use crate::domain::node::{Node, NodeCommand, NodeEvent};
use crate::domain::pool::{Deallocation, NodeProvider, Pool, PoolCommand, PoolStatus, ResizeState};
use crate::domain::task::{Task, TaskCommand};
use crate::domain::{Ctx, RejectionCode};
use crate::server::supervisors::scheduler::HeldTask;
use crate::store::{Envelope, StreamId, StreamKind};
use crate::types::{AccountName, NodeId, PoolId, SharedStr, Timestamp};

use crate::server::supervisors::liveness::LOST_REASON;
use crate::server::supervisors::placement::{Feed, PlacementHandle};
use crate::server::supervisors::provider;
use crate::server::supervisors::split_pool_key;
use coalesce::{Coalescer, JobCounts};

/// Where local nodes live and where their agents connect.
#[derive(Clone)]
pub struct Local {
    /// The nodes directory (`--nodes-dir`).
    pub nodes_dir: std::path::PathBuf,
    pub server_addr: String,
    /// Given to local agents when the server takes no plaintext at all.
    pub tls_fingerprint: Option<String>,
}

/// Most nodes one reconciliation starts at once; a resize to more goes on
/// in the next round, so one request cannot fork thousands of processes
/// in one go.
const NODES_PER_ROUND_MAX: usize = 64;

pub struct Sagas {
    core: Core,
    placement: PlacementHandle,
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
    removing: RefCell<HashSet<(SharedStr, NodeId)>>,
    /// Jobs with a wall-clock timer set.
    timers: RefCell<std::collections::HashMap<StreamId, Timestamp>>,
    /// Local pools with a lost node being replaced: brought back to their
    /// target once it is gone, even when no resize is under way.
    heal: RefCell<HashSet<String>>,
    /// Job manager tasks whose completion completes their job (task
    /// stream → job stream).
    managers: RefCell<std::collections::HashMap<StreamId, StreamId>>,
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
    fn new(core: Core, placement: PlacementHandle, local: Local, server_secret: String) -> Self {
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
            managers: RefCell::default(),
        }
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
}

/// The pool, node and job supervisors' actor.
pub struct SagaSupervisor {
    sagas: Rc<Sagas>,
}

impl SagaSupervisor {
    pub fn new(
        core: Core,
        placement: PlacementHandle,
        local: Local,
        server_secret: String,
    ) -> Self {
        SagaSupervisor {
            sagas: Rc::new(Sagas::new(core, placement, local, server_secret)),
        }
    }
}

/// Take a node out at once with its tasks terminated (a pool being
/// deleted); answered once the node is removed.
pub struct RemoveNodeNow {
    pub account: AccountName,
    pub pool: PoolId,
    pub node: NodeId,
}

impl Message for RemoveNodeNow {
    type Result = Result<(), CoreError>;
}

impl Actor for SagaSupervisor {
    type Context = Context<Self>;
}

impl Handler<Feed> for SagaSupervisor {
    type Result = ();

    fn handle(&mut self, feed: Feed, _: &mut Context<Self>) {
        match feed {
            Feed::History(events) => {
                for envelope in events.iter() {
                    self.sagas.unfinished.fold(envelope);
                    self.sagas.learn_manager(envelope);
                }
            }
            Feed::CaughtUp => self.sagas.clone().on_ready(),
            Feed::Live(events) => self.sagas.clone().on_batch(&events),
        }
    }
}

impl Handler<RemoveNodeNow> for SagaSupervisor {
    type Result = ResponseFuture<Result<(), CoreError>>;

    fn handle(&mut self, remove: RemoveNodeNow, _: &mut Context<Self>) -> Self::Result {
        let sagas = self.sagas.clone();
        Box::pin(async move {
            sagas
                .remove_now(&remove.account, &remove.pool, &remove.node)
                .await
        })
    }
}

/// What a node in placement's picture asks of the node supervisor.
fn node_needs_release(n: &crate::server::supervisors::scheduler::NodeState) -> bool {
    n.rebooting || n.unusable || matches!(n.leaving, Some(d) if d != Deallocation::TaskCompletion)
}

impl Sagas {
    /// The feed caught up with the log as it was at start: carry on what
    /// was half-way.
    fn on_ready(self: Rc<Self>) {
        // Failures seen in the log that were not acted on before a restart.
        self.terminate_failed_jobs();
        // Jobs whose last task ended just before the stop: completed now if
        // due (the job's actor decides).
        for job in self.unfinished.due() {
            self.complete_job(job);
        }
        let this = self.clone();
        self.spawn("carrying on after a restart", async move {
            let (pools, leaving_or_rebooting, deadlines, terminating) = this
                .placement
                .inspect(|scheduler| {
                    let pools = scheduler.pool_keys();
                    let mut nodes = Vec::new();
                    for key in &pools {
                        let shared = SharedStr::from(key.as_str());
                        for n in scheduler.pool_nodes(key) {
                            let unusable =
                                scheduler.node(&shared, &n.node).is_some_and(|s| s.unusable);
                            if n.leaving.is_some() || n.rebooting || unusable {
                                nodes.push((key.clone(), n.node));
                            }
                        }
                    }
                    let deadlines = scheduler.job_deadlines();
                    (pools, nodes, deadlines, scheduler.terminating_jobs())
                })
                .await?;
            if let Err(e) = this.sweep_auto_pools(&pools).await {
                tracing::warn!(error = %e, "auto pools of jobs that ended: retried at the next restart");
            }
            for key in pools {
                this.reconcile(key);
            }
            for (key, node) in leaving_or_rebooting {
                let again = this.clone();
                this.spawn("carrying on a node's removal", async move {
                    again.carry_on_removal(&key, &node).await
                });
            }
            this.finish_drained();
            for (job, deadline) in deadlines {
                this.set_deadline(job, deadline);
            }
            // Jobs left terminating: their remaining tasks. The picture
            // has them from its catch-up; no second read of the log.
            for job in terminating {
                this.terminate_job_tasks(&job, "its job is terminating".into())
                    .await?;
                this.complete_if_due(&job).await?;
            }
            Ok(())
        });
    }

    /// A node left leaving, rebooting or lost by the last run.
    async fn carry_on_removal(&self, key: &str, node: &NodeId) -> Result<(), CoreError> {
        self.evict(key, node).await?;
        // A lost node the last run had not replaced yet.
        let Some((account, pool)) = split_pool_key(key) else {
            return Ok(());
        };
        let state = self
            .core
            .state::<Node>(&StreamId::node(&account, &pool, node))
            .await?
            .state;
        let lost = state.state == crate::domain::node::NodeState::Unusable
            && state
                .unusable_reason
                .is_some_and(|r| r.starts_with(LOST_REASON));
        if lost {
            self.replace_lost(key, node).await?;
        }
        Ok(())
    }

    /// One batch of new events: each reacted to in order; what needs
    /// placement's picture (late assignments, drained nodes) is asked once
    /// for the whole batch.
    fn on_batch(self: Rc<Self>, events: &[Envelope]) {
        let mut assigned = Vec::new();
        let mut drained = false;
        for envelope in events {
            match envelope.event_type.as_str() {
                "TaskAssigned" => assigned.push(envelope.stream.clone()),
                "TaskCompleted" => {
                    drained = true;
                    self.clone().manager_completed(&envelope.stream);
                }
                "TaskTerminated" | "TaskRequeued" | "TaskDeleted" => drained = true,
                "NodeLeavingPool" | "NodeRebooting" | "NodeReimaging" => {
                    drained = true;
                    self.clone().on_event(envelope);
                }
                _ => self.clone().on_event(envelope),
            }
        }
        if drained {
            self.finish_drained();
        }
        if !assigned.is_empty() {
            self.release_late_assignments(assigned);
        }
    }

    /// Assignments planned before their node began to leave or reboot.
    fn release_late_assignments(self: &Rc<Self>, assigned: Vec<StreamId>) {
        let this = self.clone();
        self.spawn("releasing a late assignment", async move {
            let affected = this
                .placement
                .inspect(move |scheduler| {
                    // Mostly none is: then no assignment is looked up.
                    let any = scheduler.all_nodes().any(|(_, n)| node_needs_release(n));
                    if !any {
                        return Vec::new();
                    }
                    let mut nodes: Vec<(SharedStr, NodeId)> = assigned
                        .iter()
                        .filter_map(|stream| scheduler.holder(stream))
                        .filter(|(key, node)| {
                            scheduler.node(key, node).is_some_and(node_needs_release)
                        })
                        .collect();
                    nodes.sort();
                    nodes.dedup();
                    nodes
                })
                .await?;
            for (key, node) in affected {
                this.evict(&key, &node).await?;
            }
            Ok(())
        });
    }

    fn on_event(self: Rc<Self>, envelope: &Envelope) {
        let stream = envelope.stream.clone();
        let ids = stream.segments();
        match envelope.event_type.as_str() {
            "PoolCreated" | "PoolResized" | "PoolResizeStopped" | "NodeRemoved" => {
                if envelope.event_type == "NodeRemoved" {
                    if let Ok(node) = NodeId::new(ids[2]) {
                        self.releases_of_removed(ids[..2].join("/"), node);
                    }
                }
                self.reconcile(ids[..2].join("/"));
            }
            "JobReleaseEnded" => {
                self.unfinished.fold(envelope);
                let this = self.clone();
                self.spawn("completing a job after its releases", async move {
                    this.complete_if_due(&stream).await
                });
            }
            "PoolDeleted" => {
                // Any node the deletion did not see (started as it ran).
                let key = ids[..2].join("/");
                if let Some((account, pool)) = split_pool_key(&key) {
                    let this = self.clone();
                    self.spawn("removing a deleted pool's last nodes", async move {
                        let left = this.placement.inspect(move |s| s.nodes_of(&key)).await?;
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
            "NodeLeavingPool" | "NodeRebooting" | "NodeReimaging" => {
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
            }
            "JobCreated" => {
                self.unfinished.fold(envelope);
                self.learn_manager(envelope);
                self.arm_deadline(stream);
            }
            "JobTerminating" | "JobDeleted" => {
                self.unfinished.fold(envelope);
                let reason = match decode_event::<JobEvent>(StreamKind::Job, envelope) {
                    Ok(JobEvent::JobTerminating { reason, .. }) => {
                        format!("its job is terminating: {reason}")
                    }
                    _ => "its job was deleted".to_string(),
                };
                if envelope.event_type == "JobDeleted" {
                    self.end_auto_pool(stream.clone());
                }
                let this = self.clone();
                self.spawn("terminating a job's tasks", async move {
                    this.terminate_job_tasks(&stream, reason).await?;
                    this.complete_if_due(&stream).await
                });
            }
            "JobCompleted" => {
                self.unfinished.fold(envelope);
                self.end_auto_pool(stream);
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
            "JobUpdated" => {
                if self.unfinished.fold(envelope) {
                    self.complete_job(stream.clone());
                }
                // Its wall-clock limit may have changed.
                self.arm_deadline(stream);
            }
            "JobTaskCountsChanged" | "JobEnabled" => {
                if self.unfinished.fold(envelope) {
                    self.complete_job(stream);
                }
                self.terminate_failed_jobs();
            }
            _ => {
                self.unfinished.fold(envelope);
            }
        }
    }
}
