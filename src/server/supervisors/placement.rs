//! The placement supervisor, an actor. It owns the scheduler's picture:
//! the log feed hands it events a batch at a time ([`Fold`]), it runs a
//! placement round after each batch, answers agents' polls ([`Poll`]) and
//! routes file reads to them ([`ReadFile`]). The other supervisors get
//! each folded batch as a [`Feed`] message and ask the picture with
//! [`Inspect`]; nothing else reads it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use crate::actors::{Core, CoreError};
use crate::api::{AttemptRef, FileAnswer, FileRead};
use crate::clock::new_request_id;
use crate::domain::task::{Task, TaskCommand, TaskSpec};
use crate::domain::Ctx;
pub use crate::server::supervisors::scheduler::JobFacts;
use crate::server::supervisors::scheduler::{relevant, Planned, Scheduler};
use crate::store::{Envelope, EventStore, StreamId, StreamKind};
use crate::types::{AccountName, JobId, NodeId, PoolId, Principal, SharedStr, TaskId};

/// What the other supervisors get from placement's feed, in log order,
/// each batch after the scheduler has folded it.
#[derive(Clone)]
pub enum Feed {
    /// Events of the log as it was at start, before `CaughtUp`: for
    /// supervisors that keep a picture of their own, not to act on.
    History(Arc<[Envelope]>),
    /// The log as it was at start is folded: carry on whatever it says is
    /// in progress.
    CaughtUp,
    /// New events, to act on.
    Live(Arc<[Envelope]>),
}

impl Message for Feed {
    type Result = ();
}

impl Feed {
    /// The events it carries (none for `CaughtUp`).
    pub fn events(&self) -> &[Envelope] {
        match self {
            Feed::History(events) | Feed::Live(events) => events,
            Feed::CaughtUp => &[],
        }
    }

    /// Whether this is the `CaughtUp` that starts a supervisor's timers:
    /// the first one it gets (`started` is then set).
    pub fn starts(&self, started: &mut bool) -> bool {
        let starts = matches!(self, Feed::CaughtUp) && !*started;
        *started |= starts;
        starts
    }
}

/// Why a file operation on a node got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFailure {
    /// The agent answered with a refusal (no such file, a path outside).
    Agent(String),
    /// The agent did not answer in time.
    Unreachable(String),
}

/// An attempt for a polling agent to start.
#[derive(Debug)]
pub struct Start {
    pub job: JobId,
    pub task: TaskId,
    pub attempt: u32,
    /// Its spec, from the assignment's outcome; `None` when this server
    /// did not keep it (assigned before a restart, or dropped), and the
    /// task's actor is asked instead.
    pub spec: Option<Arc<TaskSpec>>,
}

/// What an agent's poll asks.
pub struct PollAsk {
    /// What the agent runs (or holds, prefetched).
    pub running: Vec<AttemptRef>,
    /// What ended on the agent, its completion not yet recorded.
    pub reporting: Vec<AttemptRef>,
    pub releases_running: Vec<JobId>,
    /// The pool's secrets epoch the agent last saw.
    pub secrets_seen: Option<u64>,
    pub wait: Duration,
}

/// What a polling agent gets.
#[derive(Debug, Default)]
pub struct AgentWork {
    pub to_start: Vec<Start>,
    /// The facts of `to_start`'s jobs that the picture has (all of them
    /// but a job not folded yet).
    pub jobs: HashMap<JobId, JobFacts>,
    pub cancel: Vec<AttemptRef>,
    pub reads: Vec<FileRead>,
    pub reboot: bool,
    pub reimage: bool,
    pub releases: Vec<crate::server::supervisors::scheduler::prep::DueRelease>,
    /// The pool's secrets epoch (see `Placement::secrets`).
    pub secrets_epoch: u64,
}

impl AgentWork {
    /// Nothing to tell an agent that last saw secrets epoch `secrets_seen`
    /// (another epoch is news: the poll is answered at once).
    fn is_empty(&self, secrets_seen: Option<u64>) -> bool {
        self.to_start.is_empty()
            && self.cancel.is_empty()
            && self.reads.is_empty()
            && !self.reboot
            && self.releases.is_empty()
            && secrets_seen == Some(self.secrets_epoch)
    }
}

/// A node as placement knows it: `(ACCOUNT/POOL, node)`.
pub type NodeKey = (SharedStr, NodeId);

pub fn node_key(account: &AccountName, pool: &PoolId, node: &NodeId) -> NodeKey {
    (format!("{account}/{pool}").into(), node.clone())
}

/// Where a node's answer to a file read goes.
type AnswerSender = oneshot::Sender<Result<FileAnswer, String>>;

/// Yields before a round, so that the events already delivered to the
/// feed (a burst of completions) are folded and planned at once, without
/// a timed pause on every task's path.
const ROUND_GATHER_YIELDS: usize = 8;

/// Most events one [`Fold`] carries: a restart over a long log folds in
/// steps of this many, answering polls and requests in between.
const FEED_BATCH_MAX: usize = 512;

/// Specs kept for the hand-off at most. A spec nobody takes (its agent
/// got it from the task's actor, or never came) goes with the task's next
/// event; past this many all are dropped, and a poll that finds none asks
/// the task's actor instead.
const HANDOFF_MAX: usize = 65_536;

pub struct Placement {
    core: Core,
    scheduler: Scheduler,
    /// Whether the feed has caught up with the log as it was at start;
    /// planning on a half-read log would make doomed assignments.
    ready: bool,
    /// The server is stopping: no more rounds.
    stopping: bool,
    round_pending: bool,
    /// Polls waiting for work, per node; each is told to look again.
    parked: HashMap<NodeKey, Vec<oneshot::Sender<()>>>,
    /// The last log position folded into the picture.
    observed: watch::Sender<u64>,
    subscribers: Vec<Recipient<Feed>>,
    /// Output reads waiting for a node's agent to poll.
    reads: HashMap<NodeKey, Vec<FileRead>>,
    /// Reads handed out, waiting for the agent's answer.
    pending: HashMap<u64, (NodeKey, AnswerSender)>,
    next_read: u64,
    /// The spec of each attempt this server assigned, from the assignment's
    /// outcome, until its agent's poll is handed it: per task
    /// stream, the attempt and its spec.
    handoff: HashMap<StreamId, (u32, Arc<TaskSpec>)>,
    /// Tasks planned whose assignment's outcome has not come back yet: a
    /// poll that sees such an assignment folded waits for its spec (the
    /// outcome wakes it) rather than ask the task's actor for it.
    awaiting: HashSet<StreamId>,
    /// Per pool (ACCOUNT/POOL), the log position of its last secret set
    /// or removed: the epoch an agent's poll compares with the one it saw,
    /// so that idle agents learn of a change in their poll, at once,
    /// instead of asking every few seconds.
    secrets: HashMap<String, u64>,
    stop: watch::Receiver<bool>,
}

/// How the rest of the server talks to placement: its address, and the
/// position its picture has folded up to.
#[derive(Clone)]
pub struct PlacementHandle {
    addr: Addr<Placement>,
    observed: watch::Receiver<u64>,
}

fn gone(e: MailboxError) -> CoreError {
    CoreError::Unavailable(format!("the placement supervisor is not running: {e}"))
}

impl PlacementHandle {
    /// Starts the actor. Its feed starts with [`PlacementHandle::start_feed`],
    /// once every supervisor has subscribed, so that none misses an event.
    pub fn start(core: Core, stop: watch::Receiver<bool>) -> Self {
        let (observed, observed_rx) = watch::channel(0);
        let addr = Placement {
            core,
            scheduler: Scheduler::default(),
            ready: false,
            stopping: false,
            round_pending: false,
            parked: HashMap::new(),
            observed,
            subscribers: Vec::new(),
            reads: HashMap::new(),
            pending: HashMap::new(),
            next_read: 1,
            handoff: HashMap::new(),
            awaiting: HashSet::new(),
            secrets: HashMap::new(),
            stop,
        }
        .start();
        PlacementHandle {
            addr,
            observed: observed_rx,
        }
    }

    /// Adds a supervisor to the feed.
    pub fn subscribe(&self, to: Recipient<Feed>) {
        self.addr.do_send(Subscribe(to));
    }

    /// Reads the log from its start into the actor, a batch per message,
    /// until `stop`.
    pub fn start_feed(&self, store: EventStore, stop: watch::Receiver<bool>) {
        tokio::task::spawn_local(feed(self.addr.clone(), store, stop));
    }

    /// Waits until the picture includes every event up to `position`.
    pub async fn caught_up(&self, position: u64) {
        let mut observed = self.observed.clone();
        let _ = observed.wait_for(|p| *p >= position).await;
    }

    /// Asks the picture a question; answered between two batches.
    pub async fn inspect<R: Send + 'static>(
        &self,
        question: impl FnOnce(&Scheduler) -> R + Send + 'static,
    ) -> Result<R, CoreError> {
        self.addr
            .send(Inspect(Box::new(question)))
            .await
            .map_err(gone)
    }

    /// What a node's agent is to do now; waits up to `ask.wait` for
    /// something when there is nothing.
    pub async fn work_for(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        ask: PollAsk,
    ) -> Result<AgentWork, CoreError> {
        let poll = Poll {
            key: node_key(account, pool, node),
            account: account.clone(),
            pool: pool.clone(),
            ask,
        };
        self.addr.send(poll).await.map_err(gone)
    }

    /// Tells the picture which attempts a node's agent reported ended and
    /// the log recorded, ahead of their fold: that agent's next poll is
    /// never handed them again, however far the feed lags.
    pub async fn ended(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        attempts: Vec<(JobId, TaskId, u32)>,
    ) {
        let ended = Ended {
            account: account.clone(),
            pool: pool.clone(),
            node: node.clone(),
            attempts,
        };
        // Gone only when the server stops.
        let _ = self.addr.send(ended).await;
    }

    /// Asks a node's agent for a file operation (part of a file, a listing)
    /// and waits up to `within` for the answer.
    pub async fn read_output(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        read: FileRead,
        within: Duration,
    ) -> Result<FileAnswer, ReadFailure> {
        let ask = ReadFile {
            key: node_key(account, pool, node),
            pool: pool.clone(),
            read,
            within,
        };
        match self.addr.send(ask).await {
            Ok(answer) => answer,
            Err(e) => Err(ReadFailure::Unreachable(gone(e).to_string())),
        }
    }

    /// An agent's answer to a read; refused unless that node was asked.
    pub async fn deliver_read(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        read: u64,
        result: Result<FileAnswer, String>,
    ) -> bool {
        let answer = DeliverRead {
            key: node_key(account, pool, node),
            read,
            result,
        };
        self.addr.send(answer).await.unwrap_or(false)
    }
}

/// A batch of the log, from the feed.
struct Fold(Arc<[Envelope]>);

impl Message for Fold {
    type Result = ();
}

/// The feed has folded the log as it was at start.
struct CaughtUp;

impl Message for CaughtUp {
    type Result = ();
}

struct Subscribe(Recipient<Feed>);

impl Message for Subscribe {
    type Result = ();
}

/// A question about the picture.
pub struct Inspect<R>(Box<dyn FnOnce(&Scheduler) -> R + Send>);

impl<R: 'static> Message for Inspect<R> {
    type Result = R;
}

/// An agent's poll.
pub struct Poll {
    key: NodeKey,
    account: AccountName,
    pool: PoolId,
    ask: PollAsk,
}

impl Message for Poll {
    type Result = AgentWork;
}

/// A file operation for a node's agent, handed out at its next poll.
struct ReadFile {
    key: NodeKey,
    pool: PoolId,
    read: FileRead,
    within: Duration,
}

impl Message for ReadFile {
    type Result = Result<FileAnswer, ReadFailure>;
}

/// A read that was answered or timed out: forgotten.
struct ForgetRead {
    key: NodeKey,
    read: u64,
}

impl Message for ForgetRead {
    type Result = ();
}

struct DeliverRead {
    key: NodeKey,
    read: u64,
    result: Result<FileAnswer, String>,
}

impl Message for DeliverRead {
    type Result = bool;
}

/// Attempts an agent reported ended; see [`PlacementHandle::ended`].
struct Ended {
    account: AccountName,
    pool: PoolId,
    node: NodeId,
    attempts: Vec<(JobId, TaskId, u32)>,
}

impl Message for Ended {
    type Result = ();
}

/// An assignment's outcome, from the task's actor.
enum Assignment {
    Made {
        stream: StreamId,
        node: NodeKey,
        attempt: u32,
        spec: Option<Arc<TaskSpec>>,
    },
    Refused(StreamId),
}

impl Message for Assignment {
    type Result = ();
}

/// Reads the log into the actor: the log as it was at start in batches
/// marked as history, then `CaughtUp`, then every new batch.
async fn feed(placement: Addr<Placement>, store: EventStore, mut stop: watch::Receiver<bool>) {
    let start_head = store.head();
    if start_head > 0 {
        let mut history = read_history(store.clone(), start_head);
        loop {
            let batch = tokio::select! {
                batch = history.recv() => batch,
                _ = stop.wait_for(|s| *s) => return,
            };
            let batch = match batch {
                Some(Ok(batch)) => batch,
                None => break,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "placement feed ended while reading the log");
                    return;
                }
            };
            if placement.send(Fold(batch.into())).await.is_err() {
                return;
            }
        }
    }
    placement.do_send(CaughtUp);
    let mut subscription = store.subscribe(start_head + 1);
    loop {
        let batch = tokio::select! {
            next = subscription.next_batch(FEED_BATCH_MAX) => match next {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "placement feed ended");
                    return;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        if placement.send(Fold(batch.into())).await.is_err() {
            return;
        }
    }
}

/// The log up to position `to`, in feed batches, read on a blocking
/// thread: a restart folds one batch while the next is read and decoded
/// (reading was three fifths of a catch-up done on one thread). A few
/// batches of slack bound the memory; the thread stops when the feed
/// drops its end.
fn read_history(
    store: EventStore,
    to: u64,
) -> tokio::sync::mpsc::Receiver<Result<Vec<Envelope>, crate::store::StoreError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader = move || {
        let read = store.read_log_in_batches(1, to, FEED_BATCH_MAX, |batch| {
            tx.blocking_send(Ok(batch)).is_ok()
        });
        if let Err(e) = read {
            let _ = tx.blocking_send(Err(e));
        }
    };
    tokio::task::spawn_blocking(reader);
    rx
}

/// Commits a round's assignments in one pool, in one append where the
/// tasks have no live actor (see `Core::execute_batch`), and tells
/// placement how each went (always, so that it stops awaiting them).
async fn assign(core: Core, placement: Addr<Placement>, planned: Vec<Planned>) {
    let Some(first) = planned.first() else {
        return;
    };
    let ctx = Ctx::live(
        core.clock().as_ref(),
        Principal::System {
            component: format!("placement:{}/{}", first.account, first.pool),
        },
        new_request_id(),
    );
    let commands = planned
        .iter()
        .map(|p| {
            let node = p.node.clone();
            (p.stream.clone(), TaskCommand::AssignTask { node })
        })
        .collect();
    let outcomes = core.execute_batch::<Task>(commands, ctx).await;
    for (p, outcome) in planned.into_iter().zip(outcomes) {
        let stream = p.stream;
        match outcome {
            Ok(outcome) => placement.do_send(Assignment::Made {
                stream,
                node: node_key(&p.account, &p.pool, &p.node),
                attempt: outcome.state.attempt,
                spec: outcome.state.spec,
            }),
            Err(e) => {
                // Terminated, deleted or moved meanwhile.
                tracing::debug!(%stream, error = %e, "assignment refused");
                placement.do_send(Assignment::Refused(stream));
            }
        }
    }
}

impl Placement {
    /// Folds one event into the picture and wakes the polls it concerns
    /// (an attempt released, a node rebooting or leaving).
    fn fold(&mut self, envelope: &Envelope) {
        let kind = envelope.stream.kind();
        if matches!(
            envelope.event_type.as_str(),
            "PoolSecretSet" | "PoolSecretRemoved"
        ) {
            let pool = envelope.stream.segments().join("/");
            self.secrets.insert(pool.clone(), envelope.position);
            let nodes: Vec<NodeKey> = self
                .parked
                .keys()
                .filter(|(p, _)| **p == *pool)
                .cloned()
                .collect();
            for key in nodes {
                self.wake(&key);
            }
        }
        if kind == StreamKind::Task && envelope.event_type != "TaskAssigned" {
            // The attempt assigned last is over, or running (its
            // agent has its spec): a spec still kept is not needed.
            self.handoff.remove(&envelope.stream);
        }
        if !relevant(kind) {
            return;
        }
        // An agent whose attempt is released (terminated, requeued) is
        // told at once to stop it.
        let before = self.scheduler.holder(&envelope.stream);
        self.scheduler.observe(envelope);
        let after = self.scheduler.holder(&envelope.stream);
        for key in [before, after].into_iter().flatten() {
            self.wake(&key);
        }
        if matches!(
            envelope.event_type.as_str(),
            "JobTerminating" | "JobCompleted" | "JobDeleted" | "JobPreparationEnded"
        ) {
            // Agents that have a release to run now.
            for key in self.scheduler.release_nodes(&envelope.stream) {
                self.wake(&key);
            }
        }
        if matches!(
            envelope.event_type.as_str(),
            "NodeRebooting" | "NodeReimaging" | "NodeLeavingPool"
        ) {
            let ids = envelope.stream.segments();
            if let (3, Ok(node)) = (ids.len(), NodeId::new(ids[2])) {
                self.wake(&(ids[..2].join("/").into(), node));
            }
        }
    }

    /// Tells the node's waiting polls to look again.
    fn wake(&mut self, key: &NodeKey) {
        if let Some(waiting) = self.parked.remove(key) {
            for poll in waiting {
                let _ = poll.send(());
            }
        }
    }

    /// Runs a round soon, once the events already on their way are in.
    fn want_round(&mut self, ctx: &mut Context<Self>) {
        if !self.ready || self.stopping || self.round_pending {
            return;
        }
        self.round_pending = true;
        let gather = async {
            for _ in 0..ROUND_GATHER_YIELDS {
                tokio::task::yield_now().await;
            }
        };
        ctx.spawn(gather.into_actor(self).map(|_, act, ctx| {
            act.round_pending = false;
            if !act.stopping {
                act.round(ctx);
            }
        }));
    }

    /// Moves, then assignments, each committed through the task's actor
    /// off the actor's turn.
    fn round(&mut self, ctx: &mut Context<Self>) {
        for (stream, attempt) in self.scheduler.steals() {
            let why = "moved to a node with a free slot";
            tokio::task::spawn_local(requeue(self.core.clone(), stream, attempt, why));
        }
        for (stream, attempt) in self.scheduler.take_prep_requeues() {
            let why = "its job's preparation failed on its node";
            tokio::task::spawn_local(requeue(self.core.clone(), stream, attempt, why));
        }
        for (stream, reason) in self.scheduler.take_cancels() {
            tokio::task::spawn_local(cancel_dependent(self.core.clone(), stream, reason));
        }
        let me = ctx.address();
        let plan = self.scheduler.plan();
        self.scheduler.stats.rounds += 1;
        self.scheduler.stats.placements += plan.len() as u64;
        // One batch per pool: its assignments share a causation.
        let mut by_pool: HashMap<(AccountName, PoolId), Vec<Planned>> = HashMap::new();
        for p in plan {
            self.awaiting.insert(p.stream.clone());
            let pool = (p.account.clone(), p.pool.clone());
            by_pool.entry(pool).or_default().push(p);
        }
        for (_, planned) in by_pool {
            tokio::task::spawn_local(assign(self.core.clone(), me.clone(), planned));
        }
    }

    fn work_now(&mut self, poll: &Poll) -> AgentWork {
        let (key, node) = (&poll.key, &poll.key.1);
        let (account, pool, running) = (&poll.account, &poll.pool, &poll.ask.running);
        let scheduler = &self.scheduler;
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
        let picture = scheduler.node(&key.0, node);
        let reboot = picture.is_some_and(|n| (n.rebooting || n.unusable) && n.used == 0);
        let reimage = reboot && picture.is_some_and(|n| n.reimaging());
        // What the agent already runs is not handed out again. A big node
        // lists hundreds (its slots and the work prefetched behind them):
        // looked up, not scanned for each attempt to start.
        let listed: std::collections::HashSet<(&JobId, &TaskId, u32)> = running
            .iter()
            .chain(&poll.ask.reporting)
            .map(|r| (&r.job, &r.task, r.attempt))
            .collect();
        let to_start = scheduler.to_start_except(account, pool, node, |job, task, attempt| {
            listed.contains(&(job, task, attempt))
        });
        let (to_start, jobs) = self.with_specs(account, to_start);
        let releases = self
            .scheduler
            .releases_for(&key.0, node, &poll.ask.releases_running);
        AgentWork {
            secrets_epoch: self.secrets.get(&*key.0).copied().unwrap_or(0),
            to_start,
            jobs,
            cancel,
            reads: self.reads.remove(key).unwrap_or_default(),
            reboot,
            reimage,
            releases,
        }
    }

    /// Each attempt to start with its spec kept from its assignment, and
    /// the facts of their jobs: one turn of this actor, not a message per
    /// attempt. An attempt whose assignment's outcome has not come back
    /// yet is left for the poll that outcome wakes.
    fn with_specs(
        &mut self,
        account: &AccountName,
        to_start: Vec<(JobId, TaskId, u32)>,
    ) -> (Vec<Start>, HashMap<JobId, JobFacts>) {
        let mut starts = Vec::with_capacity(to_start.len());
        let mut jobs: HashMap<JobId, JobFacts> = HashMap::new();
        for (job, task, attempt) in to_start {
            let stream = StreamId::task(account, &job, &task);
            let spec = match self.handoff.remove(&stream) {
                Some((kept, spec)) if kept == attempt => Some(spec),
                None if self.awaiting.contains(&stream) => continue,
                _ => None,
            };
            if !jobs.contains_key(&job) {
                if let Some(facts) = self.scheduler.job_facts(&StreamId::job(account, &job)) {
                    jobs.insert(job.clone(), facts);
                }
            }
            starts.push(Start {
                job,
                task,
                attempt,
                spec,
            });
        }
        (starts, jobs)
    }
}

/// Requeues a task not started on its node (waiting behind a busy slot,
/// for a node gone idle; or where its job's preparation failed).
async fn requeue(core: Core, stream: StreamId, attempt: u32, why: &'static str) {
    let ctx = Ctx::live(
        core.clock().as_ref(),
        Principal::System {
            component: "placement".into(),
        },
        new_request_id(),
    );
    let command = TaskCommand::RequeueTask {
        attempt,
        reason: why.into(),
    };
    if let Err(e) = core.execute::<Task>(&stream, command, ctx).await {
        // Started meanwhile: it stays where it is.
        tracing::debug!(%stream, error = %e, "no move");
    }
}

/// Records that a task will never run: a parent failed under the cancel
/// policy. Refused when it ended meanwhile (terminated, deleted).
async fn cancel_dependent(core: Core, stream: StreamId, reason: String) {
    let ctx = Ctx::live(
        core.clock().as_ref(),
        Principal::System {
            component: "placement:dependencies".into(),
        },
        new_request_id(),
    );
    let command = TaskCommand::CancelTask { reason };
    if let Err(e) = core.execute::<Task>(&stream, command, ctx).await {
        tracing::debug!(%stream, error = %e, "no cancellation");
    }
}

impl Actor for Placement {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Polls and reads are still answered while connections drain;
        // only rounds stop.
        super::when_stopped(ctx, &self.stop, |act: &mut Self, _| act.stopping = true);
    }
}

impl Handler<Fold> for Placement {
    type Result = ();

    fn handle(&mut self, Fold(events): Fold, ctx: &mut Context<Self>) {
        for envelope in events.iter() {
            self.fold(envelope);
        }
        if let Some(last) = events.last() {
            self.observed.send_replace(last.position);
        }
        let feed = if self.ready {
            Feed::Live(events)
        } else {
            Feed::History(events)
        };
        for to in &self.subscribers {
            to.do_send(feed.clone());
        }
        self.want_round(ctx);
    }
}

impl Handler<CaughtUp> for Placement {
    type Result = ();

    fn handle(&mut self, _: CaughtUp, ctx: &mut Context<Self>) {
        self.ready = true;
        self.scheduler.stats.caught_up = true;
        for to in &self.subscribers {
            to.do_send(Feed::CaughtUp);
        }
        self.want_round(ctx);
    }
}

impl Handler<Subscribe> for Placement {
    type Result = ();

    fn handle(&mut self, Subscribe(to): Subscribe, _: &mut Context<Self>) {
        if self.ready {
            to.do_send(Feed::CaughtUp);
        }
        self.subscribers.push(to);
    }
}

impl<R: 'static> Handler<Inspect<R>> for Placement {
    type Result = MessageResult<Inspect<R>>;

    fn handle(&mut self, Inspect(question): Inspect<R>, _: &mut Context<Self>) -> Self::Result {
        MessageResult(question(&self.scheduler))
    }
}

impl Handler<Poll> for Placement {
    type Result = ResponseFuture<AgentWork>;

    fn handle(&mut self, poll: Poll, ctx: &mut Context<Self>) -> Self::Result {
        let work = self.work_now(&poll);
        if !work.is_empty(poll.ask.secrets_seen) || poll.ask.wait.is_zero() {
            return Box::pin(async move { work });
        }
        // Parked: woken when the picture changes for this node, or at the
        // end of its wait, then asked again for what is left of the wait.
        // A change may bring nothing to hand out yet (an assignment folded
        // before its outcome is back): answering empty then would send
        // the agent to sleep before it polls again.
        let (wake, woken) = oneshot::channel();
        let waiting = self.parked.entry(poll.key.clone()).or_default();
        waiting.retain(|w| !w.is_closed());
        waiting.push(wake);
        let me = ctx.address();
        let deadline = tokio::time::Instant::now() + poll.ask.wait;
        Box::pin(async move {
            let mut again = poll;
            let woken = tokio::time::timeout_at(deadline, woken).await.is_ok();
            again.ask.wait = match woken {
                true => deadline.saturating_duration_since(tokio::time::Instant::now()),
                // Its wait is over: whatever there is, at once.
                false => Duration::ZERO,
            };
            me.send(again).await.unwrap_or_default()
        })
    }
}

impl Handler<Ended> for Placement {
    type Result = ();

    fn handle(&mut self, e: Ended, _: &mut Context<Self>) {
        let (account, pool, node) = (&e.account, &e.pool, &e.node);
        self.scheduler.forget_ended(account, pool, node, e.attempts);
    }
}

impl Handler<Assignment> for Placement {
    type Result = ();

    fn handle(&mut self, outcome: Assignment, ctx: &mut Context<Self>) {
        match outcome {
            Assignment::Made {
                stream,
                node,
                attempt,
                spec,
            } => {
                self.awaiting.remove(&stream);
                if let Some(spec) = spec {
                    if self.handoff.len() >= HANDOFF_MAX {
                        self.handoff.clear();
                    }
                    self.handoff.insert(stream, (attempt, spec));
                }
                // A poll that saw the assignment folded first waits for this.
                self.wake(&node);
            }
            Assignment::Refused(stream) => {
                self.awaiting.remove(&stream);
                self.scheduler.unplan(&stream);
                self.want_round(ctx);
            }
        }
    }
}

impl Handler<ReadFile> for Placement {
    type Result = ResponseFuture<Result<FileAnswer, ReadFailure>>;

    fn handle(&mut self, ask: ReadFile, ctx: &mut Context<Self>) -> Self::Result {
        let ReadFile {
            key,
            pool,
            mut read,
            within,
        } = ask;
        let id = self.next_read;
        self.next_read += 1;
        read.read = id;
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, (key.clone(), tx));
        self.reads.entry(key.clone()).or_default().push(read);
        self.wake(&key);
        let me = ctx.address();
        Box::pin(async move {
            let answer = tokio::time::timeout(within, rx).await;
            let node = key.1.clone();
            me.do_send(ForgetRead { key, read: id });
            match answer {
                Ok(Ok(result)) => result.map_err(ReadFailure::Agent),
                _ => Err(ReadFailure::Unreachable(format!(
                    "node {node} did not answer within {}s; is its agent running? (lote node show {pool} {node})",
                    within.as_secs()
                ))),
            }
        })
    }
}

impl Handler<ForgetRead> for Placement {
    type Result = ();

    fn handle(&mut self, forget: ForgetRead, _: &mut Context<Self>) {
        self.pending.remove(&forget.read);
        if let Some(queued) = self.reads.get_mut(&forget.key) {
            queued.retain(|r| r.read != forget.read);
            if queued.is_empty() {
                self.reads.remove(&forget.key);
            }
        }
    }
}

impl Handler<DeliverRead> for Placement {
    type Result = bool;

    fn handle(&mut self, answer: DeliverRead, _: &mut Context<Self>) -> bool {
        if self.pending.get(&answer.read).map(|(k, _)| k) != Some(&answer.key) {
            return false;
        }
        if let Some((_, tx)) = self.pending.remove(&answer.read) {
            let _ = tx.send(answer.result);
        }
        true
    }
}
