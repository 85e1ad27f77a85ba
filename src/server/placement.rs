//! The placement supervisor: feeds the scheduler from the log and runs
//! rounds when something changed, committing each planned assignment
//! through the task's actor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::actors::Core;
use crate::clock::new_request_id;
use crate::compute::scheduler::{relevant, Scheduler};
use crate::domain::job::{Job, JobCommand};
use crate::domain::task::{Task, TaskCommand};
use crate::domain::Ctx;
use crate::store::StreamId;
use crate::types::{AccountName, NodeId, PoolId, Principal};

/// Pause before a round, so a burst of changes is planned at once.
const ROUND_GATHER: Duration = Duration::from_millis(2);

pub struct Placement {
    scheduler: RefCell<Scheduler>,
    round_wanted: Notify,
    /// Whether the feed has caught up with the log as it was at start;
    /// planning on a half-read log would make doomed assignments.
    ready: Cell<bool>,
    /// Agents waiting for work, per (ACCOUNT/POOL, node).
    agents: RefCell<HashMap<(String, NodeId), Rc<Notify>>>,
}

impl Placement {
    /// Starts the feed and the round loop as local tasks; both end when
    /// `stop` turns true.
    pub fn start(core: Core, stop: watch::Receiver<bool>) -> Rc<Placement> {
        let placement = Rc::new(Placement {
            scheduler: RefCell::default(),
            round_wanted: Notify::new(),
            ready: Cell::new(false),
            agents: RefCell::default(),
        });
        let store = core.store().clone();
        let start_head = store.head();
        placement.ready.set(start_head == 0);

        let feed = placement.clone();
        let mut feed_stop = stop.clone();
        let core_for_feed = core.clone();
        tokio::task::spawn_local(async move {
            let mut subscription = store.subscribe(1);
            loop {
                let envelope = tokio::select! {
                    next = subscription.next() => match next {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::error!(error = %e, "placement feed ended");
                            return;
                        }
                    },
                    _ = feed_stop.wait_for(|s| *s) => return,
                };
                if feed.ready.get()
                    && matches!(
                        envelope.event_type.as_str(),
                        "JobTaskCountsChanged" | "JobTerminating"
                    )
                {
                    complete_if_due(&core_for_feed, &envelope.stream);
                }
                if relevant(envelope.stream.kind()) {
                    feed.scheduler.borrow_mut().observe(&envelope);
                    if envelope.event_type == "TaskAssigned" {
                        let holder = feed.scheduler.borrow().holder(&envelope.stream);
                        if let Some(key) = holder {
                            feed.agent_notify(key).notify_one();
                        }
                    }
                }
                if !feed.ready.get() && subscription.next_position() > start_head {
                    feed.ready.set(true);
                }
                if feed.ready.get() {
                    feed.round_wanted.notify_one();
                }
            }
        });

        let rounds = placement.clone();
        let mut round_stop = stop;
        tokio::task::spawn_local(async move {
            loop {
                tokio::select! {
                    _ = rounds.round_wanted.notified() => {}
                    _ = round_stop.wait_for(|s| *s) => return,
                }
                tokio::time::sleep(ROUND_GATHER).await;
                let planned = rounds.scheduler.borrow_mut().plan();
                for p in planned {
                    let core = core.clone();
                    let rounds = rounds.clone();
                    tokio::task::spawn_local(async move {
                        let stream = StreamId::task(&p.account, &p.job, &p.task);
                        let ctx = Ctx::live(
                            core.clock().as_ref(),
                            Principal::System {
                                component: format!("placement:{}/{}", p.account, p.pool),
                            },
                            new_request_id(),
                        );
                        let command = TaskCommand::AssignTask {
                            node: p.node.clone(),
                        };
                        if let Err(e) = core.execute::<Task>(&stream, command, ctx).await {
                            // Terminated, deleted or moved meanwhile.
                            tracing::debug!(%stream, error = %e, "assignment refused");
                            rounds.scheduler.borrow_mut().unplan(&stream);
                            rounds.round_wanted.notify_one();
                        }
                    });
                }
            }
        });
        placement
    }

    fn agent_notify(&self, key: (String, NodeId)) -> Rc<Notify> {
        self.agents.borrow_mut().entry(key).or_default().clone()
    }

    /// The attempts waiting for a node's agent; waits up to `wait` for one.
    pub async fn work_for(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        wait: Duration,
    ) -> Vec<(crate::types::JobId, crate::types::TaskId, u32)> {
        let notify = self.agent_notify((format!("{account}/{pool}"), node.clone()));
        let now = self.scheduler.borrow().to_start(account, pool, node);
        if !now.is_empty() || wait.is_zero() {
            return now;
        }
        let _ = tokio::time::timeout(wait, notify.notified()).await;
        self.scheduler.borrow().to_start(account, pool, node)
    }

    /// The most task slots a node of the pool has (0 when none is known).
    pub fn largest_node(&self, account: &AccountName, pool: &PoolId) -> u32 {
        self.scheduler.borrow().largest_node(account, pool)
    }
}

/// The job-completion supervisor: a job whose tasks have all finished, and
/// that asked to complete then (or is terminating), is completed. The job's
/// own `decide` says whether it is due; this only asks at the right moments.
fn complete_if_due(core: &Core, job: &StreamId) {
    let core = core.clone();
    let job = job.clone();
    tokio::task::spawn_local(async move {
        let Ok(state) = core.state::<Job>(&job).await else {
            return;
        };
        if state.state.completion_due().is_none() {
            return;
        }
        let ctx = Ctx::live(
            core.clock().as_ref(),
            Principal::System {
                component: "job-completion".into(),
            },
            new_request_id(),
        );
        let command = JobCommand::CompleteJob {
            reason: "all tasks finished".into(),
        };
        if let Err(e) = core.execute::<Job>(&job, command, ctx).await {
            tracing::debug!(%job, error = %e, "job not completed");
        }
    });
}
