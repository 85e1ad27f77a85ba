//! Node liveness: any call from a node's agent is its heartbeat. A node
//! whose agent has been silent longer than the timeout (killed, machine
//! gone, network cut) is marked unusable; the node supervisor then puts its
//! tasks back in the queue (requeues, not retries) and, in a local pool,
//! replaces the node.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::placement::{Placement, Reactor};
use super::split_pool_key;
use crate::actors::Core;
use crate::domain::node::{Node, NodeCommand, NodeState};
use crate::domain::Ctx;
use crate::store::{Envelope, StreamId};
use crate::types::NodeId;

/// How a lost node's `NodeUnusable` reason starts; the node supervisor
/// replaces only nodes lost this way (not, say, an agent that cannot
/// start, which a replacement would not fix).
pub const LOST_REASON: &str = "lost: no heartbeat from its agent";

/// How often silence is checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);

pub struct Liveness {
    core: Core,
    placement: Rc<Placement>,
    lost_after: Duration,
    /// Nodes being marked (the command in flight).
    marking: RefCell<HashSet<(String, NodeId)>>,
    started: Cell<Option<Instant>>,
    stop: watch::Receiver<bool>,
}

/// States in which a node's agent is expected to call.
fn watched(state: NodeState) -> bool {
    matches!(
        state,
        NodeState::Starting
            | NodeState::WaitingForStartTask
            | NodeState::StartTaskFailed
            | NodeState::Idle
            | NodeState::Running
            | NodeState::Offline
            | NodeState::Rebooting
    )
}

impl Liveness {
    pub fn new(
        core: Core,
        placement: Rc<Placement>,
        lost_after: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Liveness {
            core,
            placement,
            lost_after,
            marking: RefCell::default(),
            started: Cell::new(None),
            stop,
        }
    }

    /// Nodes silent for longer than the timeout. After a server start
    /// every node gets the full timeout from that start to call again.
    fn silent(&self, started: Instant) -> Vec<(String, NodeId)> {
        let scheduler = self.placement.scheduler();
        let now = Instant::now();
        let mut out = Vec::new();
        for ((key, node), n) in scheduler.all_nodes() {
            if !watched(n.state()) {
                continue;
            }
            let last = self
                .placement
                .last_contact(key, node)
                .map_or(started, |l| l.max(started));
            if now.duration_since(last) > self.lost_after {
                out.push((key.clone(), node.clone()));
            }
        }
        out
    }

    fn check(self: &Rc<Self>, started: Instant) {
        for (key, node) in self.silent(started) {
            if !self
                .marking
                .borrow_mut()
                .insert((key.clone(), node.clone()))
            {
                continue;
            }
            let Some((account, pool)) = split_pool_key(&key) else {
                continue;
            };
            let this = self.clone();
            let secs = self.lost_after.as_secs_f64();
            tokio::task::spawn_local(async move {
                let stream = StreamId::node(&account, &pool, &node);
                let ctx = Ctx::system(this.core.clock().as_ref(), "liveness");
                let command = NodeCommand::MarkUnusable {
                    reason: format!("{LOST_REASON} for over {secs}s"),
                };
                match this.core.execute::<Node>(&stream, command, ctx).await {
                    Ok(_) => tracing::warn!(%stream, "node lost: no heartbeat for {secs}s"),
                    Err(e) => tracing::debug!(%stream, error = %e, "node not marked lost"),
                }
                // Its own event moves it out of the watched states; until
                // the feed folds it, this keeps it from being marked twice.
                this.placement.caught_up(this.core.store().head()).await;
                this.marking.borrow_mut().remove(&(key, node));
            });
        }
    }
}

impl Reactor for Liveness {
    fn on_ready(self: Rc<Self>) {
        if self.started.get().is_some() {
            return;
        }
        let started = Instant::now();
        self.started.set(Some(started));
        let mut stop = self.stop.clone();
        tokio::task::spawn_local(async move {
            let mut ticker = tokio::time::interval(CHECK_EVERY);
            loop {
                tokio::select! {
                    _ = ticker.tick() => self.check(started),
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }

    fn on_event(self: Rc<Self>, _envelope: &Envelope) {}
}
