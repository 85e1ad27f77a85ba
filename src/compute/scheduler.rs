//! Placement: which queued task goes to which node's free slots.
//!
//! The scheduler's picture of the world is folded from the event log
//! through a subscription, like any other reader; it changes nothing
//! itself. A round plans assignments on that picture, and each is
//! committed as an `AssignTask` command through the task's actor. Slots are
//! reserved when planned, so the next round does not plan them twice before
//! the `TaskAssigned` event comes back; a refused assignment gives them back.
//! Agents see an assignment only once its event is durable.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::compute::explain::{WaitGroup, WaitReason};
use crate::domain::decode_event;
use crate::domain::job::JobEvent;
use crate::domain::node::NodeEvent;
use crate::domain::pool::{Deallocation, PoolEvent, SchedulingPolicy};
use crate::domain::task::TaskEvent;
use crate::store::{Envelope, StreamId, StreamKind};
use crate::types::{AccountName, JobId, NodeId, PoolId, TaskId, Timestamp};

/// Queue order: higher job priority first, then submission order.
type QueueKey = (Reverse<i32>, u64);

/// A pool's queue counts as long (worth prefetching for) from this many
/// tasks per slot, and at least [`PREFETCH_QUEUE_MIN`]: a few tasks added
/// now and then are not held behind busy slots. Once long, a queue is
/// prefetched to its end (less deep as it shrinks; see `Scheduler::plan`).
pub const PREFETCH_QUEUE_FACTOR: u64 = 2;
pub const PREFETCH_QUEUE_MIN: u64 = 100;

/// Tasks a node may hold ahead, per slot, while its pool's queue is long:
/// enough to cover the server's round trip (two durable appends) with
/// tasks that take a millisecond, also when an fsync stalls for tens of
/// milliseconds. With 4, the compute bench's CPUs sat idle 11% of the time
/// on this VM's disk, in bursts that matched its stolen time; with 16, 1%.
pub const PREFETCH_PER_SLOT: u32 = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedTask {
    pub account: AccountName,
    pub job: JobId,
    pub task: TaskId,
    pub slots: u32,
}

#[derive(Debug, Default)]
struct PoolState {
    policy: SchedulingPolicy,
    queue: BTreeMap<QueueKey, QueuedTask>,
    nodes: BTreeSet<NodeId>,
    /// One past the highest `node-N` index ever created in the pool, so a
    /// new node never takes the id (and so the credential) of an old one.
    next_index: u32,
    slots_per_node: u32,
    /// Task outcomes recorded since the pool was created (for autoscale).
    succeeded: u64,
    failed: u64,
    /// Queued tasks per (job, slots needed): the groups that wait for the
    /// same reasons, kept so they are known without walking the queue.
    classes: HashMap<(StreamId, u32), u64>,
    /// The queue was long in an earlier round and has not run empty since:
    /// its tail is still prefetched, less deep as it shrinks.
    draining: bool,
}

impl PoolState {
    /// Takes a task out of the queue.
    fn take(&mut self, key: &QueueKey) -> Option<QueuedTask> {
        let task = self.queue.remove(key)?;
        let class = (StreamId::job(&task.account, &task.job), task.slots);
        if let Some(n) = self.classes.get_mut(&class) {
            *n -= 1;
            if *n == 0 {
                self.classes.remove(&class);
            }
        }
        if self.queue.is_empty() {
            self.draining = false;
        }
        Some(task)
    }
}

/// A pool's load as autoscale formulas read it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolFigures {
    pub active_tasks: u64,
    pub active_slots: u64,
    pub running_tasks: u64,
    pub running_slots: u64,
    pub succeeded_tasks: u64,
    pub failed_tasks: u64,
    /// Nodes in the pool, whatever their state.
    pub nodes: u64,
    /// Nodes that take work now.
    pub usable_nodes: u64,
    pub slots_per_node: u32,
}

#[derive(Debug, Default)]
pub struct NodeState {
    pub slots: u32,
    pub used: u32,
    pub schedulable: bool,
    /// Attempts placed here whose `TaskAssigned` is durable and that have
    /// not started: what the agent's next poll gets.
    pub to_start: BTreeMap<(JobId, TaskId), u32>,
    /// Slots held by attempts whose start is recorded.
    started_slots: u32,
    /// Leaving the pool, with what to do with its tasks.
    pub leaving: Option<Deallocation>,
    /// The node as its own events made it.
    model: crate::domain::node::Node,
    /// Rebooting: its agent is to stop everything and register again.
    pub rebooting: bool,
    /// Declared lost (no heartbeat); its tasks go back to the queue.
    pub unusable: bool,
}

impl NodeState {
    /// The node's state as its own events made it.
    pub fn state(&self) -> crate::domain::node::NodeState {
        self.model.state
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    Active,
    Held,
    Closed,
}

#[derive(Debug)]
struct JobInfo {
    priority: i32,
    state: JobState,
    /// When the job runs past its maximum wall-clock time.
    deadline: Option<Timestamp>,
    /// Terminating and not yet completed: its tasks are being stopped.
    terminating: bool,
    /// The job's resource files, fixed at creation: handed out with each
    /// assignment without asking the job's actor (whose stream every
    /// task count change lengthens).
    resource_files: std::sync::Arc<Vec<crate::domain::spec::ResourceFile>>,
}

/// Where a task's slots are held.
#[derive(Debug, Clone)]
struct Holding {
    pool_key: String,
    node: NodeId,
    slots: u32,
    queue_key: QueueKey,
    task: QueuedTask,
    /// The attempt placed (0 until its `TaskAssigned` is read back).
    attempt: u32,
    /// Its start is recorded (`TaskStarted`).
    started: bool,
}

/// One planned assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub account: AccountName,
    pub pool: PoolId,
    pub job: JobId,
    pub task: TaskId,
    pub node: NodeId,
}

/// The scheduler's whole picture.
#[derive(Debug, Default)]
pub struct Scheduler {
    pools: HashMap<String, PoolState>,
    nodes: HashMap<(String, NodeId), NodeState>,
    jobs: HashMap<StreamId, JobInfo>,
    /// Queued tasks: task stream → where in which pool's queue.
    queued: HashMap<StreamId, (String, QueueKey)>,
    /// Tasks holding slots (planned, assigned or running).
    holding: HashMap<StreamId, Holding>,
    /// The task whose attempt just completed: a `TaskRetried` right after
    /// it (same append, next event) puts it back in its queue place.
    just_completed: Option<(StreamId, Holding)>,
    /// Tasks proposed by [`steals`](Self::steals) and not yet moved.
    stealing: std::collections::HashSet<StreamId>,
}

fn pool_key(account: &AccountName, pool: &PoolId) -> String {
    format!("{account}/{pool}")
}

impl Scheduler {
    /// Folds one event into the picture. Undecodable events are skipped
    /// (the replay check reports them; placement must not stop).
    pub fn observe(&mut self, envelope: &Envelope) {
        let stream = &envelope.stream;
        let ids = stream.segments();
        match stream.kind() {
            StreamKind::Pool => {
                let Ok(event) = decode_event::<PoolEvent>(StreamKind::Pool, envelope) else {
                    return;
                };
                let key = ids[..2].join("/");
                match event {
                    PoolEvent::PoolCreated { spec, .. } => {
                        let pool = self.pools.entry(key).or_default();
                        pool.policy = spec.scheduling;
                        pool.slots_per_node = spec.node_size.task_slots;
                    }
                    PoolEvent::PoolDeleted { .. } => {
                        self.pools.remove(&key);
                    }
                    _ => {}
                }
            }
            StreamKind::Job => {
                let Ok(event) = decode_event::<JobEvent>(StreamKind::Job, envelope) else {
                    return;
                };
                let state = match event {
                    JobEvent::JobCreated { spec, at } => {
                        self.jobs.insert(
                            stream.clone(),
                            JobInfo {
                                priority: spec.priority,
                                state: JobState::Active,
                                deadline: spec.max_wall_clock_secs.map(|s| at.plus_secs(s)),
                                terminating: false,
                                resource_files: std::sync::Arc::new(spec.common_resource_files),
                            },
                        );
                        return;
                    }
                    JobEvent::JobDisabled { .. } => JobState::Held,
                    JobEvent::JobEnabled { .. } => JobState::Active,
                    JobEvent::JobTerminating { .. }
                    | JobEvent::JobCompleted { .. }
                    | JobEvent::JobDeleted { .. } => JobState::Closed,
                    _ => return,
                };
                if let Some(job) = self.jobs.get_mut(stream) {
                    job.state = state;
                    job.terminating = matches!(event, JobEvent::JobTerminating { .. });
                }
            }
            StreamKind::Node => {
                let Ok(event) = decode_event::<NodeEvent>(StreamKind::Node, envelope) else {
                    return;
                };
                let key = ids[..2].join("/");
                let Ok(node_id) = NodeId::new(ids[2]) else {
                    return;
                };
                if matches!(event, NodeEvent::NodeRemoved { .. }) {
                    self.nodes.remove(&(key.clone(), node_id.clone()));
                    if let Some(p) = self.pools.get_mut(&key) {
                        p.nodes.remove(&node_id);
                    }
                    return;
                }
                self.pools
                    .entry(key.clone())
                    .or_default()
                    .nodes
                    .insert(node_id.clone());
                if let Some(index) = node_id
                    .as_str()
                    .strip_prefix("node-")
                    .and_then(|i| i.parse::<u32>().ok())
                {
                    let pool = self.pools.entry(key.clone()).or_default();
                    pool.next_index = pool.next_index.max(index.saturating_add(1));
                }
                let node = self.nodes.entry((key, node_id)).or_default();
                // The node's own state machine decides what it may do: a
                // load report from a leaving or offline node must not make
                // it schedulable again.
                if let Err(why) = crate::domain::apply_checked(&mut node.model, &event) {
                    tracing::error!(%stream, %why, "placement skipped a node event it cannot apply");
                    return;
                }
                use crate::domain::node::NodeState as S;
                let model = &node.model;
                let slots = model.agent.as_ref().map(|a| a.task_slots).unwrap_or(0);
                let leaving =
                    (model.state == S::LeavingPool).then(|| model.deallocation.unwrap_or_default());
                let (schedulable, rebooting) =
                    (model.state.is_schedulable(), model.state == S::Rebooting);
                node.slots = slots;
                node.schedulable = schedulable;
                node.rebooting = rebooting;
                node.unusable = model.state == S::Unusable;
                node.leaving = leaving;
            }
            StreamKind::Task => self.observe_task(envelope),
            StreamKind::Account | StreamKind::Request => {}
        }
    }

    fn observe_task(&mut self, envelope: &Envelope) {
        let stream = &envelope.stream;
        let Ok(event) = decode_event::<TaskEvent>(StreamKind::Task, envelope) else {
            return;
        };
        if !matches!(event, TaskEvent::TaskAssigned { .. }) {
            self.stealing.remove(stream);
        }
        match event {
            TaskEvent::TaskAdded {
                account,
                job,
                pool,
                spec,
                ..
            } => {
                let priority = self
                    .jobs
                    .get(&StreamId::job(&account, &job))
                    .map(|j| j.priority)
                    .unwrap_or(0);
                let task = QueuedTask {
                    account: account.clone(),
                    job,
                    task: spec.id,
                    slots: spec.required_slots.max(1),
                };
                self.enqueue(
                    stream,
                    pool_key(&account, &pool),
                    (Reverse(priority), envelope.position),
                    task,
                );
            }
            TaskEvent::TaskAssigned {
                placement, attempt, ..
            } => {
                // Planned by this scheduler: slots already reserved. After
                // a restart: reserve them now.
                if !self.holding.contains_key(stream) {
                    if let Some((pool, key)) = self.queued.remove(stream) {
                        let task = self.pools.get_mut(&pool).and_then(|p| p.take(&key));
                        if let Some(task) = task {
                            self.hold(stream, pool, placement.node.clone(), key, task);
                        }
                    }
                }
                if let Some(h) = self.holding.get_mut(stream) {
                    h.attempt = attempt;
                    let k = (h.pool_key.clone(), h.node.clone());
                    let item = (h.task.job.clone(), h.task.task.clone());
                    if let Some(node) = self.nodes.get_mut(&k) {
                        node.to_start.insert(item, attempt);
                    }
                }
            }
            TaskEvent::TaskStarted { .. } => {
                if let Some(h) = self.holding.get_mut(stream) {
                    let k = (h.pool_key.clone(), h.node.clone());
                    let item = (h.task.job.clone(), h.task.task.clone());
                    let newly = !std::mem::replace(&mut h.started, true);
                    if let Some(node) = self.nodes.get_mut(&k) {
                        node.to_start.remove(&item);
                        if newly {
                            node.started_slots += h.slots;
                        }
                    }
                }
            }
            TaskEvent::TaskCompleted { result, .. } => {
                self.just_completed = self.release(stream).map(|h| (stream.clone(), h));
                if let Some((_, h)) = &self.just_completed {
                    if let Some(p) = self.pools.get_mut(&h.pool_key) {
                        if result.succeeded() {
                            p.succeeded += 1;
                        } else {
                            p.failed += 1;
                        }
                    }
                }
            }
            TaskEvent::TaskTerminated { .. } | TaskEvent::TaskDeleted { .. } => {
                let pool = self
                    .release(stream)
                    .map(|h| h.pool_key)
                    .or_else(|| self.queued.get(stream).map(|(p, _)| p.clone()));
                if let (TaskEvent::TaskTerminated { .. }, Some(p)) = (&event, pool) {
                    if let Some(p) = self.pools.get_mut(&p) {
                        p.failed += 1;
                    }
                }
                if let Some((pool, key)) = self.queued.remove(stream) {
                    if let Some(p) = self.pools.get_mut(&pool) {
                        p.take(&key);
                    }
                }
            }
            // Recorded just before its completion; holds nothing.
            TaskEvent::TaskOutputsUploaded { .. } => {}
            TaskEvent::TaskRetried { .. } | TaskEvent::TaskRequeued { .. } => {
                let completed = match self.just_completed.take() {
                    Some((s, h)) if &s == stream => Some(h),
                    _ => None,
                };
                if let Some(h) = &completed {
                    // A failure with retries left is not a failed task.
                    if let Some(p) = self.pools.get_mut(&h.pool_key) {
                        p.failed = p.failed.saturating_sub(1);
                    }
                }
                if let Some(h) = self.release(stream).or(completed) {
                    // Back in the queue at its original place.
                    self.enqueue(stream, h.pool_key, h.queue_key, h.task);
                }
            }
        }
    }

    fn enqueue(&mut self, stream: &StreamId, pool: String, key: QueueKey, task: QueuedTask) {
        let p = self.pools.entry(pool.clone()).or_default();
        let class = (StreamId::job(&task.account, &task.job), task.slots);
        if p.queue.insert(key, task).is_none() {
            *p.classes.entry(class).or_default() += 1;
        }
        self.queued.insert(stream.clone(), (pool, key));
    }

    fn hold(
        &mut self,
        stream: &StreamId,
        pool: String,
        node: NodeId,
        key: QueueKey,
        task: QueuedTask,
    ) {
        if let Some(n) = self.nodes.get_mut(&(pool.clone(), node.clone())) {
            n.used += task.slots;
        }
        self.holding.insert(
            stream.clone(),
            Holding {
                pool_key: pool,
                node,
                slots: task.slots,
                queue_key: key,
                task,
                attempt: 0,
                started: false,
            },
        );
    }

    /// Frees a task's slots; returns what it held.
    fn release(&mut self, stream: &StreamId) -> Option<Holding> {
        let h = self.holding.remove(stream)?;
        if let Some(n) = self.nodes.get_mut(&(h.pool_key.clone(), h.node.clone())) {
            n.used = n.used.saturating_sub(h.slots);
            if h.started {
                n.started_slots = n.started_slots.saturating_sub(h.slots);
            }
            n.to_start
                .remove(&(h.task.job.clone(), h.task.task.clone()));
        }
        Some(h)
    }

    /// A planned assignment was refused: back to the queue.
    pub fn unplan(&mut self, stream: &StreamId) {
        if let Some(h) = self.release(stream) {
            self.enqueue(stream, h.pool_key, h.queue_key, h.task);
        }
    }

    /// Plans one round over every pool, reserving the slots it uses.
    ///
    /// Free slots are filled first. Then, while a pool's queue is long
    /// (at least [`PREFETCH_QUEUE_FACTOR`] times its slots), each node is
    /// also given up to [`PREFETCH_PER_SLOT`] tasks per slot to start as
    /// soon as one of its slots frees: the agent starts the next task without waiting for
    /// the server's round trip, which is what keeps short tasks near the
    /// raw spawn rate. At the end of a long queue the depth shrinks with
    /// the queue (what is left shared over the slots, at least one each):
    /// with nothing prefetched, the last hundred tasks each waited for a
    /// round trip. A queue that was never long is not prefetched. In both
    /// cases [`steals`](Self::steals) moves tasks waiting behind slots busy
    /// with started tasks to nodes that went idle.
    pub fn plan(&mut self) -> Vec<Planned> {
        let mut out = Vec::new();
        let pool_keys: Vec<String> = self
            .pools
            .iter()
            .filter(|(_, p)| !p.queue.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in pool_keys {
            let Some(pool) = self.pools.get(&key) else {
                continue;
            };
            let policy = pool.policy;
            let room = |ahead_per_slot: u32| -> Vec<(NodeId, u32)> {
                pool.nodes
                    .iter()
                    .filter_map(|n| {
                        let s = self.nodes.get(&(key.clone(), n.clone()))?;
                        let capacity = s.slots * (1 + ahead_per_slot);
                        (s.schedulable && capacity > s.used).then(|| (n.clone(), capacity - s.used))
                    })
                    .collect()
            };
            let mut free = room(0);
            let mut picked = self.pick(&pool.queue, &mut free, policy, &BTreeSet::new());
            let total_slots: u64 = pool
                .nodes
                .iter()
                .filter_map(|n| self.nodes.get(&(key.clone(), n.clone())))
                .filter(|s| s.schedulable)
                .map(|s| u64::from(s.slots))
                .sum();
            let queued = pool.queue.len() as u64;
            let long_queue =
                queued >= (PREFETCH_QUEUE_FACTOR * total_slots).max(PREFETCH_QUEUE_MIN);
            let ahead_per_slot = if long_queue {
                PREFETCH_PER_SLOT
            } else if pool.draining && total_slots > 0 {
                (queued / total_slots).clamp(1, u64::from(PREFETCH_PER_SLOT)) as u32
            } else {
                0
            };
            if ahead_per_slot > 0 {
                let mut ahead = room(ahead_per_slot);
                for (qkey, node) in &picked {
                    let slots = pool.queue.get(qkey).map(|t| t.slots).unwrap_or(1);
                    if let Some((_, f)) = ahead.iter_mut().find(|(n, _)| n == node) {
                        *f = f.saturating_sub(slots);
                    }
                }
                let taken: BTreeSet<QueueKey> = picked.iter().map(|(k, _)| *k).collect();
                // Spread the waiting work, so no node's queue runs dry first.
                let more = self.pick(&pool.queue, &mut ahead, SchedulingPolicy::Spread, &taken);
                picked.extend(more);
            }
            if long_queue {
                if let Some(pool) = self.pools.get_mut(&key) {
                    pool.draining = true;
                }
            }
            for (qkey, node) in picked {
                let Some(task) = self.pools.get_mut(&key).and_then(|p| p.take(&qkey)) else {
                    continue;
                };
                let pool_id = key.split('/').nth(1).and_then(|p| PoolId::new(p).ok());
                let Some(pool_id) = pool_id else { continue };
                let stream = StreamId::task(&task.account, &task.job, &task.task);
                self.queued.remove(&stream);
                out.push(Planned {
                    account: task.account.clone(),
                    pool: pool_id,
                    job: task.job.clone(),
                    task: task.task.clone(),
                    node: node.clone(),
                });
                self.hold(&stream, key.clone(), node, qkey, task);
            }
        }
        out
    }

    /// Queue entries that fit in `free`, in queue order, by `policy`.
    fn pick(
        &self,
        queue: &BTreeMap<QueueKey, QueuedTask>,
        free: &mut [(NodeId, u32)],
        policy: SchedulingPolicy,
        skip: &BTreeSet<QueueKey>,
    ) -> Vec<(QueueKey, NodeId)> {
        let mut picked = Vec::new();
        if free.is_empty() {
            return picked;
        }
        for (qkey, task) in queue {
            if free.iter().all(|(_, f)| *f == 0) {
                break;
            }
            if skip.contains(qkey) {
                continue;
            }
            let job = StreamId::job(&task.account, &task.job);
            if self.jobs.get(&job).map(|j| j.state) != Some(JobState::Active) {
                continue;
            }
            let fits = free.iter_mut().filter(|(_, f)| *f >= task.slots);
            // Pack: the fullest node that fits (fill one, free others for
            // scale-down). Spread: the emptiest.
            let choice = match policy {
                SchedulingPolicy::Pack => fits.min_by_key(|(n, f)| (*f, n.clone())),
                SchedulingPolicy::Spread => fits.max_by_key(|(n, f)| (*f, Reverse(n.clone()))),
            };
            if let Some((node, f)) = choice {
                *f -= task.slots;
                picked.push((*qkey, node.clone()));
            }
        }
        picked
    }

    /// Tasks waiting on a busy node (prefetched, not started) to move to a
    /// node of the same pool that has free slots and nothing queued for
    /// it: requeued, they are placed there by the next round. Each is
    /// proposed once. Only behind slots that are all held by attempts whose
    /// start is recorded: where slots turn over faster than a start is
    /// reported (tasks shorter than the agent's start report delay), the
    /// agent may already have started an attempt the picture still lists
    /// as waiting, and moving it would run it twice.
    pub fn steals(&mut self) -> Vec<HeldTask> {
        let mut out = Vec::new();
        for (key, pool) in &self.pools {
            if !pool.queue.is_empty() {
                continue;
            }
            let node = |n: &NodeId| self.nodes.get(&(key.clone(), n.clone()));
            let mut idle: u32 = pool
                .nodes
                .iter()
                .filter_map(node)
                .filter(|s| s.schedulable && s.used < s.slots)
                .map(|s| s.slots - s.used)
                .sum();
            if idle == 0 {
                continue;
            }
            for n in &pool.nodes {
                let Some(s) = node(n) else { continue };
                if s.started_slots < s.slots {
                    continue;
                }
                // Only what waits beyond the node's own slots.
                let waiting = s.used.saturating_sub(s.slots) as usize;
                for ((job, task), attempt) in s.to_start.iter().rev().take(waiting) {
                    if idle == 0 {
                        break;
                    }
                    let account = key.split('/').next().and_then(|a| AccountName::new(a).ok());
                    let Some(account) = account else { continue };
                    let stream = StreamId::task(&account, job, task);
                    if self.stealing.contains(&stream) {
                        continue;
                    }
                    idle = idle.saturating_sub(1);
                    out.push((stream, *attempt));
                }
            }
        }
        for (stream, _) in &out {
            self.stealing.insert(stream.clone());
        }
        out
    }

    /// What the agent of a node should start.
    pub fn to_start(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
    ) -> Vec<(JobId, TaskId, u32)> {
        self.to_start_except(account, pool, node, |_, _, _| false)
    }

    /// [`Scheduler::to_start`] without the attempts `listed` names (those
    /// the agent reports it has), which are never copied.
    pub fn to_start_except(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        listed: impl Fn(&JobId, &TaskId, u32) -> bool,
    ) -> Vec<(JobId, TaskId, u32)> {
        self.nodes
            .get(&(pool_key(account, pool), node.clone()))
            .map(|n| {
                n.to_start
                    .iter()
                    .filter(|((j, t), a)| !listed(j, t, **a))
                    .map(|((j, t), a)| (j.clone(), t.clone(), *a))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The most slots any live node of the pool has (0: none known yet).
    pub fn largest_node(&self, account: &AccountName, pool: &PoolId) -> u32 {
        let key = pool_key(account, pool);
        self.pools
            .get(&key)
            .map(|p| {
                p.nodes
                    .iter()
                    .filter_map(|n| self.nodes.get(&(key.clone(), n.clone())).map(|s| s.slots))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Tasks waiting for a node, over all pools.
    /// A pool's load now, for autoscale. Walks the pool's queue and the
    /// tasks holding slots: run once per sample period, not per event.
    pub fn pool_figures(&self, pool_key: &str) -> PoolFigures {
        let Some(pool) = self.pools.get(pool_key) else {
            return PoolFigures::default();
        };
        let mut f = PoolFigures {
            active_tasks: pool.queue.len() as u64,
            active_slots: pool.queue.values().map(|t| u64::from(t.slots)).sum(),
            succeeded_tasks: pool.succeeded,
            failed_tasks: pool.failed,
            nodes: pool.nodes.len() as u64,
            slots_per_node: pool.slots_per_node,
            ..PoolFigures::default()
        };
        for h in self.holding.values().filter(|h| h.pool_key == pool_key) {
            f.running_tasks += 1;
            f.running_slots += u64::from(h.slots);
        }
        f.usable_nodes = pool
            .nodes
            .iter()
            .filter(|n| {
                self.nodes
                    .get(&(pool_key.to_string(), (*n).clone()))
                    .is_some_and(|s| s.schedulable)
            })
            .count() as u64;
        f
    }

    /// Every reason the tasks of `job` needing `slots` slots wait in the
    /// pool's queue, but their places in it.
    fn shared_reasons(&self, pool_key: &str, job: &StreamId, slots: u32) -> Vec<WaitReason> {
        use crate::domain::node::NodeState as S;
        let mut reasons = Vec::new();
        if self
            .jobs
            .get(job)
            .is_some_and(|j| j.state == JobState::Held)
        {
            reasons.push(WaitReason::JobDisabled);
        }
        let nodes: Vec<&NodeState> = self
            .pools
            .get(pool_key)
            .map(|p| {
                p.nodes
                    .iter()
                    .filter_map(|n| self.nodes.get(&(pool_key.to_string(), n.clone())))
                    .collect()
            })
            .unwrap_or_default();
        if nodes.is_empty() {
            reasons.push(WaitReason::NoNodes);
            return reasons;
        }
        let working: Vec<&&NodeState> = nodes.iter().filter(|n| n.schedulable).collect();
        if working.is_empty() {
            let count =
                |f: &dyn Fn(S) -> bool| nodes.iter().filter(|n| f(n.state())).count() as u32;
            let failed = count(&|s| s == S::StartTaskFailed);
            if failed as usize == nodes.len() {
                reasons.push(WaitReason::StartTaskFailedEverywhere { nodes: failed });
            } else {
                reasons.push(WaitReason::NodesNotReady {
                    starting: count(&|s| matches!(s, S::Creating | S::Starting)),
                    waiting_for_start_task: count(&|s| s == S::WaitingForStartTask),
                    start_task_failed: failed,
                    offline: count(&|s| s == S::Offline),
                    unusable: count(&|s| s == S::Unusable),
                    rebooting: count(&|s| s == S::Rebooting),
                    leaving: count(&|s| s == S::LeavingPool),
                });
            }
            return reasons;
        }
        let largest = working.iter().map(|n| n.slots).max().unwrap_or(0);
        if slots > largest {
            reasons.push(WaitReason::TooFewSlots {
                needs: slots,
                largest,
            });
            return reasons;
        }
        let most_free = working
            .iter()
            .map(|n| n.slots.saturating_sub(n.used))
            .max()
            .unwrap_or(0);
        if most_free < slots {
            reasons.push(WaitReason::NodesFull {
                nodes: working.len() as u32,
                used: working.iter().map(|n| n.used.min(n.slots)).sum(),
                slots: working.iter().map(|n| n.slots).sum(),
                most_free,
                needs: slots,
            });
        }
        reasons
    }

    /// Why a queued task is not running: every reason, with its numbers.
    /// `None` when the task is not queued.
    pub fn explain(&self, stream: &StreamId) -> Option<(String, u32, Vec<WaitReason>)> {
        let (pool_key, key) = self.queued.get(stream)?;
        let pool = self.pools.get(pool_key)?;
        let task = pool.queue.get(key)?;
        let job = StreamId::job(&task.account, &task.job);
        let mut reasons = self.shared_reasons(pool_key, &job, task.slots);
        let (mut higher, mut earlier) = (0u64, 0u64);
        for (k, _) in pool.queue.range(..*key) {
            if k.0 < key.0 {
                higher += 1;
            } else {
                earlier += 1;
            }
        }
        if higher > 0 {
            reasons.push(WaitReason::HigherPriorityAhead { tasks: higher });
        }
        if earlier > 0 {
            reasons.push(WaitReason::EarlierAhead { tasks: earlier });
        }
        Some((pool_key.clone(), task.slots, reasons))
    }

    /// Every group of queued tasks that waits for the same reasons (one
    /// job, one slot need, one pool), with its reasons and size.
    pub fn wait_groups(&self) -> Vec<(StreamId, WaitGroup)> {
        let mut out = Vec::new();
        for (pool_key, pool) in &self.pools {
            for ((job, slots), tasks) in &pool.classes {
                out.push((
                    job.clone(),
                    WaitGroup {
                        tasks: *tasks,
                        slots: *slots,
                        reasons: self.shared_reasons(pool_key, job, *slots),
                    },
                ));
            }
        }
        out
    }

    /// A job's queued tasks grouped by the slots they need, each group
    /// with the reasons its tasks share.
    pub fn job_waits(&self, job: &StreamId) -> Vec<(String, WaitGroup)> {
        let mut out: Vec<(String, WaitGroup)> = Vec::new();
        for (pool_key, pool) in &self.pools {
            for ((j, slots), tasks) in &pool.classes {
                if j == job {
                    out.push((
                        pool_key.clone(),
                        WaitGroup {
                            tasks: *tasks,
                            slots: *slots,
                            reasons: self.shared_reasons(pool_key, job, *slots),
                        },
                    ));
                }
            }
        }
        out.sort_by_key(|(_, g)| g.slots);
        out
    }

    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }
}

/// Whether an aggregate kind's events can change placement.
pub fn relevant(kind: StreamKind) -> bool {
    !matches!(kind, StreamKind::Account | StreamKind::Request)
}

/// A node as the node supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub node: NodeId,
    /// Slots held by tasks placed there.
    pub used: u32,
    pub slots: u32,
    pub leaving: Option<Deallocation>,
    pub rebooting: bool,
}

/// A task holding slots: its stream and the attempt placed.
pub type HeldTask = (StreamId, u32);

impl Scheduler {
    /// The live nodes of a pool (leaving ones included), in id order.
    pub fn pool_nodes(&self, pool_key: &str) -> Vec<NodeView> {
        let Some(pool) = self.pools.get(pool_key) else {
            return Vec::new();
        };
        pool.nodes
            .iter()
            .filter_map(|n| {
                let s = self.nodes.get(&(pool_key.to_string(), n.clone()))?;
                Some(NodeView {
                    node: n.clone(),
                    used: s.used,
                    slots: s.slots,
                    leaving: s.leaving,
                    rebooting: s.rebooting,
                })
            })
            .collect()
    }

    /// Every node the picture holds for a pool, even once the pool itself
    /// is gone from it.
    /// Every node of every pool, by (ACCOUNT/POOL, node).
    pub fn all_nodes(&self) -> impl Iterator<Item = (&(String, NodeId), &NodeState)> {
        self.nodes.iter()
    }

    pub fn nodes_of(&self, pool_key: &str) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .nodes
            .keys()
            .filter(|(k, _)| k == pool_key)
            .map(|(_, n)| n.clone())
            .collect();
        out.sort();
        out
    }

    /// The index the pool's next `node-N` should take.
    pub fn next_node_index(&self, pool_key: &str) -> u32 {
        self.pools.get(pool_key).map(|p| p.next_index).unwrap_or(0)
    }

    /// A job's resource files, once its creation is folded.
    pub fn job_resource_files(
        &self,
        job: &StreamId,
    ) -> Option<std::sync::Arc<Vec<crate::domain::spec::ResourceFile>>> {
        self.jobs.get(job).map(|j| j.resource_files.clone())
    }

    /// A node's state in the picture.
    pub fn node(&self, pool_key: &str, node: &NodeId) -> Option<&NodeState> {
        self.nodes.get(&(pool_key.to_string(), node.clone()))
    }

    /// The tasks whose slots are held on a node.
    pub fn held_on(&self, pool_key: &str, node: &NodeId) -> Vec<HeldTask> {
        let mut out: Vec<HeldTask> = self
            .holding
            .iter()
            .filter(|(_, h)| h.pool_key == pool_key && &h.node == node)
            .map(|(s, h)| (s.clone(), h.attempt))
            .collect();
        out.sort();
        out
    }

    /// A job's unfinished tasks: queued ones, and held ones with their
    /// attempt.
    pub fn tasks_of_job(&self, job: &StreamId) -> (Vec<StreamId>, Vec<HeldTask>) {
        let of_job = |t: &QueuedTask| &StreamId::job(&t.account, &t.job) == job;
        let mut queued: Vec<StreamId> = self
            .queued
            .iter()
            .filter(|(_, (pool, key))| {
                self.pools
                    .get(pool)
                    .and_then(|p| p.queue.get(key))
                    .is_some_and(of_job)
            })
            .map(|(s, _)| s.clone())
            .collect();
        let mut held: Vec<HeldTask> = self
            .holding
            .iter()
            .filter(|(_, h)| of_job(&h.task))
            .map(|(s, h)| (s.clone(), h.attempt))
            .collect();
        queued.sort();
        held.sort();
        (queued, held)
    }

    /// Leaving nodes that hold no task any more: ready to be removed.
    pub fn drained_leaving(&self) -> Vec<(String, NodeId)> {
        let mut out: Vec<(String, NodeId)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.leaving.is_some() && n.used == 0 && n.to_start.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }

    /// Open jobs with a wall-clock deadline.
    pub fn job_deadlines(&self) -> Vec<(StreamId, Timestamp)> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.state != JobState::Closed)
            .filter_map(|(s, j)| Some((s.clone(), j.deadline?)))
            .collect()
    }

    /// Jobs terminating and not yet completed.
    pub fn terminating_jobs(&self) -> Vec<StreamId> {
        let mut out: Vec<StreamId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.terminating)
            .map(|(s, _)| s.clone())
            .collect();
        out.sort();
        out
    }

    /// Pools with live nodes or queued tasks, as ACCOUNT/POOL.
    pub fn pool_keys(&self) -> Vec<String> {
        self.pools.keys().cloned().collect()
    }

    /// Which of the attempts an agent reports running it should stop:
    /// those that no longer hold slots on its node at that attempt.
    pub fn superseded<'a>(
        &self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        running: impl IntoIterator<Item = (&'a JobId, &'a TaskId, u32)>,
    ) -> Vec<usize> {
        let key = pool_key(account, pool);
        let mut stream = String::new();
        running
            .into_iter()
            .enumerate()
            .filter(|(_, (job, task, attempt))| {
                StreamId::write_task(&mut stream, account, job, task);
                let h = self.holding.get(stream.as_str());
                !h.is_some_and(|h| h.pool_key == key && &h.node == node && h.attempt == *attempt)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The node a task's slots are held on, as (ACCOUNT/POOL, node).
    pub fn holder(&self, stream: &StreamId) -> Option<(String, NodeId)> {
        self.holding
            .get(stream)
            .map(|h| (h.pool_key.clone(), h.node.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{Job, JobCommand, JobSpec};
    use crate::domain::node::{AgentInfo, Node, NodeCommand};
    use crate::domain::pool::{Pool, PoolCommand, PoolSpec};
    use crate::domain::spec::CommandLine;
    use crate::domain::task::{Task, TaskCommand, TaskSpec};
    use crate::domain::Aggregate;
    use crate::types::Principal;

    /// Feeds the scheduler what the log would carry for commands run on
    /// the aggregates (tasks kept, to be assigned and started later).
    struct Feed {
        scheduler: Scheduler,
        position: u64,
        account: AccountName,
        pool: PoolId,
        job: JobId,
        tasks: HashMap<StreamId, (Task, u64)>,
    }

    impl Feed {
        fn run<A: Aggregate>(
            &mut self,
            stream: &StreamId,
            state: &mut A,
            version: &mut u64,
            command: A::Command,
            principal: Principal,
        ) {
            let at = (version, &mut self.position);
            let envelopes =
                crate::domain::decide_to_envelopes(state, at, stream, command, principal)
                    .expect("accepted");
            for envelope in &envelopes {
                self.scheduler.observe(envelope);
            }
        }

        fn new() -> Feed {
            let mut feed = Feed {
                scheduler: Scheduler::default(),
                position: 0,
                account: AccountName::new("acme").unwrap(),
                pool: PoolId::new("p").unwrap(),
                job: JobId::new("j").unwrap(),
                tasks: HashMap::new(),
            };
            let (account, pool, job) = (feed.account.clone(), feed.pool.clone(), feed.job.clone());
            let spec = PoolSpec::fixed(pool.clone(), account.clone(), 0, 2);
            let (mut p, mut v) = (Pool::default(), 0);
            let create = PoolCommand::CreatePool { spec };
            feed.run(
                &StreamId::pool(&account, &pool),
                &mut p,
                &mut v,
                create,
                Principal::Admin,
            );
            let spec = JobSpec::on_pool(job.clone(), account.clone(), pool.clone());
            let (mut j, mut v) = (Job::default(), 0);
            let create = JobCommand::CreateJob { spec };
            feed.run(
                &StreamId::job(&account, &job),
                &mut j,
                &mut v,
                create,
                Principal::Admin,
            );
            feed
        }

        /// A registered, idle node with 2 slots.
        fn node(&mut self, n: u32) {
            let node = NodeId::new(format!("node-{n}")).unwrap();
            let (account, pool) = (self.account.clone(), self.pool.clone());
            let add = NodeCommand::AddNode {
                account: account.clone(),
                pool: pool.clone(),
                node: node.clone(),
                name: format!("n{n}"),
            };
            let register = NodeCommand::RegisterAgent {
                agent: AgentInfo {
                    hostname: format!("host-{n}"),
                    address: "127.0.0.1".into(),
                    cores: 2,
                    memory_mib: 1024,
                    task_slots: 2,
                    agent_version: "test".into(),
                },
                has_start_task: false,
            };
            let agent = Principal::Node {
                account: account.clone(),
                pool: pool.clone(),
                node: node.clone(),
            };
            let stream = StreamId::node(&account, &pool, &node);
            let (mut state, mut v) = (Node::default(), 0);
            self.run(&stream, &mut state, &mut v, add, Principal::Admin);
            self.run(&stream, &mut state, &mut v, register, agent);
        }

        fn tasks(&mut self, from: u32, count: u32) {
            for i in from..from + count {
                let id = TaskId::new(format!("t{i}")).unwrap();
                let add = TaskCommand::AddTask {
                    account: self.account.clone(),
                    job: self.job.clone(),
                    pool: self.pool.clone(),
                    spec: TaskSpec::simple(id.clone(), CommandLine::Shell("true".into())),
                    max_task_retries: 0,
                };
                let stream = StreamId::task(&self.account, &self.job, &id);
                let (mut state, mut v) = (Task::default(), 0);
                self.run(&stream, &mut state, &mut v, add, Principal::Admin);
                self.tasks.insert(stream, (state, v));
            }
        }

        fn task(&mut self, stream: &StreamId, command: TaskCommand, principal: Principal) {
            let (mut state, mut v) = self.tasks.remove(stream).expect("a task of this feed");
            self.run(stream, &mut state, &mut v, command, principal);
            self.tasks.insert(stream.clone(), (state, v));
        }

        /// Plans a round and records its assignments; the planned tasks.
        fn plan(&mut self) -> Vec<Planned> {
            let planned = self.scheduler.plan();
            for p in &planned {
                let stream = StreamId::task(&p.account, &p.job, &p.task);
                let assign = TaskCommand::AssignTask {
                    node: p.node.clone(),
                };
                self.task(&stream, assign, Principal::Admin);
            }
            planned
        }
    }

    #[test]
    fn a_long_queue_is_prefetched_to_its_end_and_a_short_one_never() {
        let mut feed = Feed::new();
        feed.node(0);
        // Short from the start: only the free slots are filled.
        feed.tasks(0, 10);
        assert_eq!(feed.plan().len(), 2);
        assert_eq!(feed.scheduler.queued_len(), 8);

        let mut feed = Feed::new();
        feed.node(0);
        feed.tasks(0, 150);
        // Long: the free slots, and 16 per slot ahead.
        let ahead = 2 * (1 + PREFETCH_PER_SLOT as usize);
        assert_eq!(feed.plan().len(), ahead);
        feed.node(1);
        assert_eq!(feed.plan().len(), ahead);
        assert_eq!(feed.scheduler.queued_len(), 150 - 2 * ahead);
        // 82 left, no longer a long queue: a new node still gets work
        // ahead, as deep as the queue shared over the slots allows
        // (82 / 6 = 13 per slot).
        feed.node(2);
        assert_eq!(feed.plan().len(), 2 * (1 + 13));
        // 54 left over 8 slots: 6 each.
        feed.node(3);
        assert_eq!(feed.plan().len(), 2 * (1 + 6));
        // 40 left over 10 slots: 4 each, and so on down to one each.
        feed.node(4);
        assert_eq!(feed.plan().len(), 2 * (1 + 4));
        assert_eq!(feed.scheduler.queued_len(), 30);
        for n in 5..20 {
            feed.node(n);
        }
        assert_eq!(feed.plan().len(), 30);
        assert_eq!(feed.scheduler.queued_len(), 0);

        // Work waits behind every busy node now, and a node is idle; but
        // no start is recorded (short tasks report none), so an agent may
        // already run what the picture lists as waiting: nothing moves.
        feed.node(20);
        assert!(feed.scheduler.steals().is_empty());
        // Once both of node-0's slots hold started attempts, what waits
        // behind them moves, as many as the idle node has slots.
        let to_start =
            feed.scheduler
                .to_start(&feed.account, &feed.pool, &NodeId::new("node-0").unwrap());
        for (job, task, attempt) in to_start.into_iter().take(2) {
            let stream = StreamId::task(&feed.account, &job, &task);
            let agent = Principal::Node {
                account: feed.account.clone(),
                pool: feed.pool.clone(),
                node: NodeId::new("node-0").unwrap(),
            };
            feed.task(&stream, TaskCommand::StartTask { attempt }, agent);
        }
        assert_eq!(feed.scheduler.steals().len(), 2);

        // Once the queue ran empty, a new short queue is not prefetched.
        // (Only the idle nodes' free slots: node-20's, whose steals are
        // proposed but not done, and node-21's.)
        feed.node(21);
        feed.tasks(1000, 10);
        assert_eq!(feed.plan().len(), 4);
        assert_eq!(feed.scheduler.queued_len(), 6);
    }
}
