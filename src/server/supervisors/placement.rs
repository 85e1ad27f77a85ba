//! The placement supervisor: feeds the scheduler from the log and runs
//! rounds when something changed, committing each planned assignment
//! through the task's actor.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};

use crate::actors::Core;
use crate::api::{AttemptRef, FileAnswer, FileRead};
use crate::clock::new_request_id;
use crate::domain::task::{Task, TaskCommand, TaskSpec};
use crate::domain::Ctx;
use crate::server::supervisors::scheduler::{relevant, Scheduler};
use crate::store::{Envelope, StreamId, StreamKind};
use crate::types::{AccountName, JobId, NodeId, PoolId, Principal, TaskId};

/// What reacts to the log once placement's picture includes each event:
/// the node, pool and job supervisors (`sagas.rs`).
pub trait Reactor {
    /// The feed caught up with the log as it was at start: carry on
    /// whatever the log says is in progress.
    fn on_ready(self: Rc<Self>);
    /// One event, after the scheduler has folded it.
    fn on_event(self: Rc<Self>, envelope: &Envelope);
    /// One event of the log as it was at start, read before `on_ready`
    /// (for reactors that keep a picture of their own).
    fn on_history(self: Rc<Self>, _envelope: &Envelope) {}
}

/// Why a file operation on a node got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFailure {
    /// The agent answered with a refusal (no such file, a path outside).
    Agent(String),
    /// The agent did not answer in time.
    Unreachable(String),
}

/// What a polling agent gets.
#[derive(Debug, Default)]
pub struct AgentWork {
    pub to_start: Vec<(crate::types::JobId, crate::types::TaskId, u32)>,
    pub cancel: Vec<AttemptRef>,
    pub reads: Vec<FileRead>,
    pub reboot: bool,
}

impl AgentWork {
    fn is_empty(&self) -> bool {
        self.to_start.is_empty() && self.cancel.is_empty() && self.reads.is_empty() && !self.reboot
    }
}

type NodeKey = (String, NodeId);

/// Where a node's answer to a file read goes.
type AnswerSender = oneshot::Sender<Result<FileAnswer, String>>;

/// Yields before a round, so that the events already delivered to the
/// feed (a burst of completions) are folded and planned at once, without
/// a timed pause on every task's path.
const ROUND_GATHER_YIELDS: usize = 8;
/// Events the log feed folds before it lets other work on the server's
/// thread run.
const FEED_EVENTS_PER_YIELD: u64 = 256;

pub struct Placement {
    scheduler: RefCell<Scheduler>,
    round_wanted: Notify,
    /// Whether the feed has caught up with the log as it was at start;
    /// planning on a half-read log would make doomed assignments.
    ready: Cell<bool>,
    /// Agents waiting for work, per (ACCOUNT/POOL, node).
    agents: RefCell<HashMap<NodeKey, Rc<Notify>>>,
    /// The last log position folded into the picture.
    observed: watch::Sender<u64>,
    reactors: RefCell<Vec<Rc<dyn Reactor>>>,
    /// Output reads waiting for a node's agent to poll.
    reads: RefCell<HashMap<NodeKey, Vec<FileRead>>>,
    /// Reads handed out, waiting for the agent's answer.
    pending: RefCell<HashMap<u64, (NodeKey, AnswerSender)>>,
    next_read: Cell<u64>,
    /// When each node's agent last called: its heartbeat.
    contact: RefCell<HashMap<NodeKey, std::time::Instant>>,
    /// The spec of each attempt this server assigned, from the assignment's
    /// outcome, until its agent is handed it (see [`Placement::take_spec`]):
    /// per task stream, the attempt and its spec.
    handoff: RefCell<HashMap<StreamId, (u32, TaskSpec)>>,
}

/// Specs kept for the hand-off at most. A spec nobody takes (its agent
/// got it from the task's actor, or never came) goes with the task's next
/// event; past this many all are dropped, and a poll that finds none asks
/// the task's actor instead.
const HANDOFF_MAX: usize = 65_536;

impl Placement {
    /// Starts the feed and the round loop as local tasks; both end when
    /// `stop` turns true.
    pub fn start(core: Core, stop: watch::Receiver<bool>) -> Rc<Placement> {
        let placement = Rc::new(Placement {
            scheduler: RefCell::default(),
            round_wanted: Notify::new(),
            ready: Cell::new(false),
            agents: RefCell::default(),
            observed: watch::channel(0).0,
            reactors: RefCell::default(),
            reads: RefCell::default(),
            pending: RefCell::default(),
            next_read: Cell::new(1),
            contact: RefCell::default(),
            handoff: RefCell::default(),
        });
        let store = core.store().clone();
        let start_head = store.head();
        placement.ready.set(start_head == 0);

        tokio::task::spawn_local(placement.clone().feed(store, start_head, stop.clone()));
        tokio::task::spawn_local(placement.clone().rounds(core, stop));
        placement
    }

    /// Folds one event into the scheduler's picture and wakes the agents
    /// it concerns (an attempt released, a node rebooting or leaving).
    fn fold(&self, envelope: &Envelope) {
        let kind = envelope.stream.kind();
        if kind == StreamKind::Task && envelope.event_type != "TaskAssigned" {
            // The attempt assigned last is over, or running (its
            // agent has its spec): a spec still kept is not needed.
            self.handoff.borrow_mut().remove(&envelope.stream);
        }
        if relevant(kind) {
            // An agent whose attempt is released (terminated,
            // requeued) is told at once to stop it.
            let before = self.scheduler.borrow().holder(&envelope.stream);
            self.scheduler.borrow_mut().observe(envelope);
            let after = self.scheduler.borrow().holder(&envelope.stream);
            for key in [before, after].into_iter().flatten() {
                self.agent_notify(key).notify_one();
            }
            if matches!(
                envelope.event_type.as_str(),
                "NodeRebooting" | "NodeLeavingPool"
            ) {
                let ids = envelope.stream.segments();
                if let (3, Ok(node)) = (ids.len(), NodeId::new(ids[2])) {
                    self.agent_notify((ids[..2].join("/"), node)).notify_one();
                }
            }
        }
    }

    /// Feeds the picture from the log, then the reactors; wants a round
    /// after each event once the log as it was at start is read.
    async fn feed(
        self: Rc<Self>,
        store: crate::store::EventStore,
        start_head: u64,
        mut feed_stop: watch::Receiver<bool>,
    ) {
        let feed = self;
        let mut subscription = store.subscribe(1);
        let mut folded = 0u64;
        loop {
            folded += 1;
            if folded % FEED_EVENTS_PER_YIELD == 0 {
                // The subscription hands out a long history without
                // ever waiting: let requests in between, or a restart
                // over a big log would answer nothing until it is all
                // folded.
                tokio::task::yield_now().await;
            }
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
            feed.fold(&envelope);
            feed.observed.send_replace(envelope.position);
            let reactors = feed.reactors.borrow().clone();
            if feed.ready.get() {
                for reactor in reactors {
                    reactor.on_event(&envelope);
                }
            } else {
                for reactor in &reactors {
                    reactor.clone().on_history(&envelope);
                }
                if subscription.next_position() > start_head {
                    feed.ready.set(true);
                    for reactor in reactors {
                        reactor.on_ready();
                    }
                }
            }
            if feed.ready.get() {
                feed.round_wanted.notify_one();
            }
        }
    }

    /// Requeues tasks waiting behind busy slots, for nodes gone idle.
    fn move_stolen(&self, core: &Core) {
        let steals = self.scheduler.borrow_mut().steals();
        for (stream, attempt) in steals {
            let core = core.clone();
            tokio::task::spawn_local(async move {
                let ctx = Ctx::live(
                    core.clock().as_ref(),
                    Principal::System {
                        component: "placement".into(),
                    },
                    new_request_id(),
                );
                let command = TaskCommand::RequeueTask {
                    attempt,
                    reason: "moved to a node with a free slot".into(),
                };
                if let Err(e) = core.execute::<Task>(&stream, command, ctx).await {
                    // Started meanwhile: it stays where it is.
                    tracing::debug!(%stream, error = %e, "no move");
                }
            });
        }
    }

    /// Runs a round whenever one is wanted: moves, then assignments, each
    /// committed through the task's actor.
    async fn rounds(self: Rc<Self>, core: Core, mut round_stop: watch::Receiver<bool>) {
        let rounds = self;
        loop {
            tokio::select! {
                _ = rounds.round_wanted.notified() => {}
                _ = round_stop.wait_for(|s| *s) => return,
            }
            for _ in 0..ROUND_GATHER_YIELDS {
                tokio::task::yield_now().await;
            }
            rounds.move_stolen(&core);
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
                    match core.execute::<Task>(&stream, command, ctx).await {
                        Ok(outcome) => {
                            if let Some(spec) = outcome.state.spec {
                                let mut handoff = rounds.handoff.borrow_mut();
                                if handoff.len() >= HANDOFF_MAX {
                                    handoff.clear();
                                }
                                handoff.insert(stream, (outcome.state.attempt, spec));
                            }
                        }
                        Err(e) => {
                            // Terminated, deleted or moved meanwhile.
                            tracing::debug!(%stream, error = %e, "assignment refused");
                            rounds.scheduler.borrow_mut().unplan(&stream);
                            rounds.round_wanted.notify_one();
                        }
                    }
                });
            }
        }
    }

    /// The spec of an attempt this server assigned, for its agent, once:
    /// a task's spec never changes after it is added, so the assignment's
    /// outcome is as good as asking the task's actor, which costs a message
    /// round trip and a copy of the task's whole state per attempt. None
    /// when it is not kept (assigned before a restart, or dropped).
    pub fn take_spec(
        &self,
        account: &AccountName,
        job: &JobId,
        task: &TaskId,
        attempt: u32,
    ) -> Option<TaskSpec> {
        let mut stream = String::new();
        StreamId::write_task(&mut stream, account, job, task);
        let mut handoff = self.handoff.borrow_mut();
        match handoff.remove(stream.as_str()) {
            Some((kept, spec)) if kept == attempt => Some(spec),
            _ => None,
        }
    }

    /// A node's agent called: it is alive.
    pub fn touch(&self, account: &AccountName, pool: &PoolId, node: &NodeId) {
        self.contact.borrow_mut().insert(
            (format!("{account}/{pool}"), node.clone()),
            std::time::Instant::now(),
        );
    }

    /// When the node's agent last called, if it has since this server
    /// started.
    pub fn last_contact(&self, pool_key: &str, node: &NodeId) -> Option<std::time::Instant> {
        self.contact
            .borrow()
            .get(&(pool_key.to_string(), node.clone()))
            .copied()
    }

    fn agent_notify(&self, key: NodeKey) -> Rc<Notify> {
        self.agents.borrow_mut().entry(key).or_default().clone()
    }

    /// Adds something that reacts to the log. Added at server start before
    /// the feed first runs, so no event is missed.
    pub fn add_reactor(&self, reactor: Rc<dyn Reactor>) {
        self.reactors.borrow_mut().push(reactor.clone());
        if self.ready.get() {
            reactor.on_ready();
        }
    }

    /// The scheduler's picture, to read.
    pub fn scheduler(&self) -> Ref<'_, Scheduler> {
        self.scheduler.borrow()
    }

    /// Waits until the picture includes every event up to `position`.
    pub async fn caught_up(&self, position: u64) {
        let mut observed = self.observed.subscribe();
        let _ = observed.wait_for(|p| *p >= position).await;
    }

    /// What a node's agent is to do now; waits up to `wait` for something
    /// when there is nothing. `running` is what the agent runs.
    pub async fn work_for(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        running: &[AttemptRef],
        wait: Duration,
    ) -> AgentWork {
        let key = (format!("{account}/{pool}"), node.clone());
        let notify = self.agent_notify(key.clone());
        let work = self.work_now(&key, account, pool, node, running);
        if !work.is_empty() || wait.is_zero() {
            return work;
        }
        let _ = tokio::time::timeout(wait, notify.notified()).await;
        self.work_now(&key, account, pool, node, running)
    }

    fn work_now(
        &self,
        key: &NodeKey,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        running: &[AttemptRef],
    ) -> AgentWork {
        let scheduler = self.scheduler.borrow();
        let reported = running.iter().map(|a| (&a.job, &a.task, a.attempt));
        let cancel = scheduler
            .superseded(account, pool, node, reported)
            .into_iter()
            .map(|i| running[i].clone())
            .collect();
        // A reboot waits until the node's tasks are requeued, so that the
        // kills it causes are never recorded as the tasks' own failures.
        // A node declared lost that comes back reboots too: its tasks were
        // requeued elsewhere, so it kills what it still runs and joins
        // again clean.
        let reboot = scheduler
            .node(&key.0, node)
            .is_some_and(|n| (n.rebooting || n.unusable) && n.used == 0);
        // What the agent already runs is not handed out again. A big node
        // lists hundreds (its slots and the work prefetched behind them):
        // looked up, not scanned for each attempt to start.
        let listed: std::collections::HashSet<(&JobId, &TaskId, u32)> = running
            .iter()
            .map(|r| (&r.job, &r.task, r.attempt))
            .collect();
        let to_start = scheduler.to_start_except(account, pool, node, |job, task, attempt| {
            listed.contains(&(job, task, attempt))
        });
        AgentWork {
            to_start,
            cancel,
            reads: self.reads.borrow_mut().remove(key).unwrap_or_default(),
            reboot,
        }
    }

    /// Asks a node's agent for a file operation (part of a file, a listing)
    /// and waits up to `within` for the answer.
    pub async fn read_output(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        mut read: FileRead,
        within: Duration,
    ) -> Result<FileAnswer, ReadFailure> {
        let key = (format!("{account}/{pool}"), node.clone());
        let id = self.next_read.get();
        self.next_read.set(id + 1);
        read.read = id;
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, (key.clone(), tx));
        self.reads
            .borrow_mut()
            .entry(key.clone())
            .or_default()
            .push(read);
        self.agent_notify(key.clone()).notify_one();
        let answer = tokio::time::timeout(within, rx).await;
        self.pending.borrow_mut().remove(&id);
        if let Some(queued) = self.reads.borrow_mut().get_mut(&key) {
            queued.retain(|r| r.read != id);
        }
        match answer {
            Ok(Ok(result)) => result.map_err(ReadFailure::Agent),
            _ => Err(ReadFailure::Unreachable(format!(
                "node {node} did not answer within {}s; is its agent running? (lote node show {pool} {node})",
                within.as_secs()
            ))),
        }
    }

    /// An agent's answer to a read; refused unless that node was asked.
    pub fn deliver_read(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        read: u64,
        result: Result<FileAnswer, String>,
    ) -> bool {
        let key = (format!("{account}/{pool}"), node.clone());
        let mut pending = self.pending.borrow_mut();
        if pending.get(&read).map(|(k, _)| k) != Some(&key) {
            return false;
        }
        if let Some((_, tx)) = pending.remove(&read) {
            let _ = tx.send(result);
        }
        true
    }

    /// The most task slots a node of the pool has (0 when none is known).
    pub fn largest_node(&self, account: &AccountName, pool: &PoolId) -> u32 {
        self.scheduler.borrow().largest_node(account, pool)
    }
}
