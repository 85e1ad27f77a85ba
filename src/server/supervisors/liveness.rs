//! Node liveness: any call from a node's agent is its heartbeat. A node
//! whose agent has been silent longer than the timeout (killed, machine
//! gone, network cut) is marked unusable; the node supervisor then puts its
//! tasks back in the queue (requeues, not retries) and, in a local pool,
//! replaces the node.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::watch;

use super::placement::{Feed, NodeKey, PlacementHandle};
use super::split_pool_key;
use crate::actors::Core;
use crate::domain::node::{Node, NodeCommand, NodeState};
use crate::domain::Ctx;
use crate::store::StreamId;

/// How a lost node's `NodeUnusable` reason starts; the node supervisor
/// replaces only nodes lost this way (not, say, an agent that cannot
/// start, which a replacement would not fix).
pub const LOST_REASON: &str = "lost: no heartbeat from its agent";

/// How often silence is checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);

pub struct Liveness {
    core: Core,
    placement: PlacementHandle,
    lost_after: Duration,
    /// When each node's agent last called, since this server started.
    contact: HashMap<NodeKey, Instant>,
    /// Nodes being marked (the command in flight).
    marking: HashSet<NodeKey>,
    /// A check is asking placement for the watched nodes.
    checking: bool,
    started: Option<Instant>,
    stop: watch::Receiver<bool>,
}

/// A node's agent called: it is alive.
pub struct Heartbeat(pub NodeKey);

impl Message for Heartbeat {
    type Result = ();
}

/// A node's mark as lost is recorded (or refused) and folded.
struct Marked(NodeKey);

impl Message for Marked {
    type Result = ();
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
        placement: PlacementHandle,
        lost_after: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Liveness {
            core,
            placement,
            lost_after,
            contact: HashMap::new(),
            marking: HashSet::new(),
            checking: false,
            started: None,
            stop,
        }
    }

    /// Asks placement which nodes should be calling, then marks those
    /// silent for longer than the timeout. After a server start every node
    /// gets the full timeout from that start to call again.
    fn check(&mut self, ctx: &mut Context<Self>) {
        let Some(started) = self.started else {
            return;
        };
        if self.checking {
            return;
        }
        self.checking = true;
        let placement = self.placement.clone();
        let watched_nodes = async move {
            placement
                .inspect(|s| {
                    s.all_nodes()
                        .filter(|(_, n)| watched(n.state()))
                        .map(|(key, _)| key.clone())
                        .collect::<Vec<_>>()
                })
                .await
        };
        ctx.spawn(watched_nodes.into_actor(self).map(move |nodes, act, ctx| {
            act.checking = false;
            let now = Instant::now();
            for key in nodes.unwrap_or_default() {
                let last = act.contact.get(&key).map_or(started, |l| (*l).max(started));
                if now.duration_since(last) > act.lost_after {
                    act.mark(key, ctx);
                }
            }
        }));
    }

    fn mark(&mut self, key: NodeKey, ctx: &mut Context<Self>) {
        if !self.marking.insert(key.clone()) {
            return;
        }
        let Some((account, pool)) = split_pool_key(&key.0) else {
            return;
        };
        let (core, placement, me) = (self.core.clone(), self.placement.clone(), ctx.address());
        let secs = self.lost_after.as_secs_f64();
        tokio::task::spawn_local(async move {
            let stream = StreamId::node(&account, &pool, &key.1);
            let ctx = Ctx::system(core.clock().as_ref(), "liveness");
            let command = NodeCommand::MarkUnusable {
                reason: format!("{LOST_REASON} for over {secs}s"),
            };
            match core.execute::<Node>(&stream, command, ctx).await {
                Ok(_) => tracing::warn!(%stream, "node lost: no heartbeat for {secs}s"),
                Err(e) => tracing::debug!(%stream, error = %e, "node not marked lost"),
            }
            // Its own event moves it out of the watched states; until
            // the feed folds it, this keeps it from being marked twice.
            placement.caught_up(core.store().head()).await;
            me.do_send(Marked(key));
        });
    }
}

impl Actor for Liveness {
    type Context = Context<Self>;
}

impl Handler<Feed> for Liveness {
    type Result = ();

    fn handle(&mut self, feed: Feed, ctx: &mut Context<Self>) {
        if matches!(feed, Feed::CaughtUp) && self.started.is_none() {
            self.started = Some(Instant::now());
            let stop = self.stop.clone();
            super::tick_until_stopped(ctx, CHECK_EVERY, &stop, |act: &mut Self, ctx| {
                act.check(ctx)
            });
        }
    }
}

impl Handler<Heartbeat> for Liveness {
    type Result = ();

    fn handle(&mut self, Heartbeat(key): Heartbeat, _: &mut Context<Self>) {
        self.contact.insert(key, Instant::now());
    }
}

impl Handler<Marked> for Liveness {
    type Result = ();

    fn handle(&mut self, Marked(key): Marked, _: &mut Context<Self>) {
        self.marking.remove(&key);
    }
}
