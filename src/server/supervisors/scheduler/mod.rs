//! Placement: which queued task goes to which node's free slots.
//!
//! The scheduler's picture of the world is folded from the event log
//! through a subscription, like any other reader; it changes nothing
//! itself. A round plans assignments on that picture, and each is
//! committed as an `AssignTask` command through the task's actor. Slots are
//! reserved when planned, so the next round does not plan them twice before
//! the `TaskAssigned` event comes back; a refused assignment gives them back.
//! Agents see an assignment only once its event is durable.

pub mod deps;
mod observe;
pub mod prep;
mod rounds;
#[cfg(test)]
mod tests;
mod waits;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::api::explain::{WaitGroup, WaitReason};
use crate::domain::decode_event;
use crate::domain::job::JobEvent;
use crate::domain::node::NodeEvent;
use crate::domain::pool::{Deallocation, PoolEvent, SchedulingPolicy};
use crate::domain::task::TaskEvent;
use crate::store::{Envelope, StreamId, StreamKind};
use crate::types::{AccountName, JobId, NodeId, PoolId, SharedStr, TaskId, Timestamp};

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

/// A job as its queued tasks name it: made once per job and shared, so a
/// million queued tasks of one job do not hold a million copies of its
/// account and id (three strings a task was most of a queued task's
/// memory).
#[derive(Debug, PartialEq, Eq)]
pub struct JobRef {
    pub account: AccountName,
    pub job: JobId,
    pub stream: StreamId,
}

impl JobRef {
    pub fn new(account: AccountName, job: JobId) -> std::sync::Arc<JobRef> {
        let stream = StreamId::job(&account, &job);
        std::sync::Arc::new(JobRef {
            account,
            job,
            stream,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedTask {
    pub of: std::sync::Arc<JobRef>,
    pub task: TaskId,
    pub slots: u32,
}

impl QueuedTask {
    pub fn account(&self) -> &AccountName {
        &self.of.account
    }

    pub fn job(&self) -> &JobId {
        &self.of.job
    }

    pub fn job_stream(&self) -> &StreamId {
        &self.of.stream
    }
}

#[derive(Debug, Default)]
struct PoolState {
    /// `ACCOUNT/POOL`, shared by the entries of `Scheduler::queued`.
    key: SharedStr,
    policy: SchedulingPolicy,
    /// Queued tasks of active jobs: what rounds walk, in order.
    queue: BTreeMap<QueueKey, QueuedTask>,
    /// Queued tasks of jobs that are not active (disabled, terminating),
    /// kept in their place but out of the rounds' way: a round walks only
    /// what it may place, however many tasks a disabled job holds.
    parked: BTreeMap<QueueKey, QueuedTask>,
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
    /// A queued task, placeable or parked.
    fn get(&self, key: &QueueKey) -> Option<&QueuedTask> {
        self.queue.get(key).or_else(|| self.parked.get(key))
    }

    /// Tasks queued, placeable or parked.
    fn queued_len(&self) -> usize {
        self.queue.len() + self.parked.len()
    }

    /// Takes a task out of the queue (or out of the parked ones).
    fn take(&mut self, key: &QueueKey) -> Option<QueuedTask> {
        let task = self.queue.remove(key).or_else(|| self.parked.remove(key))?;
        let class = (task.job_stream().clone(), task.slots);
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

    /// Rebooting with its directories to be wiped.
    pub fn reimaging(&self) -> bool {
        self.model.reimaging
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
    /// When it was created: its wall-clock limit counts from then.
    created: Timestamp,
    /// When the job runs past its maximum wall-clock time.
    deadline: Option<Timestamp>,
    /// Terminating and not yet completed: its tasks are being stopped.
    terminating: bool,
    /// The job's resource files, fixed at creation: handed out with each
    /// assignment without asking the job's actor (whose stream every
    /// task count change lengthens).
    resource_files: std::sync::Arc<Vec<crate::domain::spec::ResourceFile>>,
    /// Its job manager task, whose assignment carries the job's key, and
    /// when the job was created (the key is derived from it).
    manager: Option<(crate::types::TaskId, Timestamp)>,
    /// Its preparation and release tasks, and where they ran.
    prep: Option<Box<prep::JobPrep>>,
    /// Its common variables, handed out with each assignment.
    common_env: std::sync::Arc<Vec<crate::domain::EnvVar>>,
    /// What its queued tasks share.
    of: std::sync::Arc<JobRef>,
}

/// Where a task's slots are held.
#[derive(Debug, Clone)]
struct Holding {
    pool_key: SharedStr,
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
    /// The task's stream (placement's key for it everywhere).
    pub stream: StreamId,
    pub account: AccountName,
    pub pool: PoolId,
    pub job: JobId,
    pub task: TaskId,
    pub node: NodeId,
}

/// What an assignment carries of its job, as the picture has it.
#[derive(Debug, Clone, Default)]
pub struct JobFacts {
    pub files: std::sync::Arc<Vec<crate::domain::spec::ResourceFile>>,
    /// The job's manager task and the job's creation time.
    pub manager: Option<(TaskId, Timestamp)>,
    pub preparation: Option<std::sync::Arc<crate::domain::job_prep::JobPreparation>>,
    pub env: std::sync::Arc<Vec<crate::domain::EnvVar>>,
}

/// The scheduler's whole picture.
#[derive(Debug, Default)]
pub struct Scheduler {
    pools: HashMap<SharedStr, PoolState>,
    nodes: HashMap<(SharedStr, NodeId), NodeState>,
    jobs: HashMap<StreamId, JobInfo>,
    /// Queued tasks: task stream → where in which pool's queue (the pool's
    /// key shared with its `PoolState`, not a string per task).
    queued: HashMap<StreamId, (SharedStr, QueueKey)>,
    /// Tasks holding slots (planned, assigned or running).
    holding: HashMap<StreamId, Holding>,
    /// The task whose attempt just completed: a `TaskRetried` right after
    /// it (same append, next event) puts it back in its queue place.
    just_completed: Option<(StreamId, Holding)>,
    /// Tasks proposed by [`steals`](Self::steals) and not yet moved.
    stealing: std::collections::HashSet<StreamId>,
    /// The dependency graphs of open jobs that use dependencies.
    deps: HashMap<StreamId, deps::Graph>,
    /// Tasks to cancel (a parent failed under the cancel policy) and why,
    /// until their end is folded.
    cancels: BTreeMap<StreamId, String>,
    /// Jobs whose release is to run on a node, per (ACCOUNT/POOL, node).
    releases_due: HashMap<(SharedStr, NodeId), BTreeSet<StreamId>>,
    /// Tasks placed on a node where their job's preparation failed: to be
    /// requeued (placed elsewhere).
    prep_requeues: Vec<HeldTask>,
    /// What placement has done since the server started, for /metrics.
    pub stats: PlacementStats,
}

/// Placement's own counters, read through `Inspect` like the rest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlacementStats {
    /// Whether the picture holds the whole log as it was at start.
    pub caught_up: bool,
    pub rounds: u64,
    pub placements: u64,
}

impl Scheduler {
    /// A pool's state, made (with its shared key) if it is not known yet.
    fn pool_mut(&mut self, key: SharedStr) -> &mut PoolState {
        self.pools.entry(key).or_insert_with_key(|key| PoolState {
            key: key.clone(),
            ..PoolState::default()
        })
    }
}

fn pool_key(account: &AccountName, pool: &PoolId) -> SharedStr {
    format!("{account}/{pool}").into()
}

/// Whether an aggregate kind's events can change placement.
pub fn relevant(kind: StreamKind) -> bool {
    !matches!(
        kind,
        StreamKind::Account | StreamKind::Request | StreamKind::Schedule | StreamKind::App
    )
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
                let s = self.nodes.get(&(pool.key.clone(), n.clone()))?;
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
    pub fn all_nodes(&self) -> impl Iterator<Item = (&(SharedStr, NodeId), &NodeState)> {
        self.nodes.iter()
    }

    pub fn nodes_of(&self, pool_key: &str) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .nodes
            .keys()
            .filter(|(k, _)| &**k == pool_key)
            .map(|(_, n)| n.clone())
            .collect();
        out.sort();
        out
    }

    /// The index the pool's next `node-N` should take.
    pub fn next_node_index(&self, pool_key: &str) -> u32 {
        self.pools.get(pool_key).map(|p| p.next_index).unwrap_or(0)
    }

    /// What an assignment carries of its job, once its creation is
    /// folded: shared, not copied.
    pub fn job_facts(&self, job: &StreamId) -> Option<JobFacts> {
        let info = self.jobs.get(job)?;
        Some(JobFacts {
            files: info.resource_files.clone(),
            manager: info.manager.clone(),
            preparation: self.job_preparation(job),
            env: info.common_env.clone(),
        })
    }

    /// A node's state in the picture.
    pub fn node(&self, pool_key: &SharedStr, node: &NodeId) -> Option<&NodeState> {
        self.nodes.get(&(pool_key.clone(), node.clone()))
    }

    /// The tasks whose slots are held on a node.
    pub fn held_on(&self, pool_key: &str, node: &NodeId) -> Vec<HeldTask> {
        let mut out: Vec<HeldTask> = self
            .holding
            .iter()
            .filter(|(_, h)| &*h.pool_key == pool_key && &h.node == node)
            .map(|(s, h)| (s.clone(), h.attempt))
            .collect();
        out.sort();
        out
    }

    /// Cancellations to record now (each handed out once; one that fails
    /// is found again after a restart).
    pub fn take_cancels(&mut self) -> Vec<(StreamId, String)> {
        std::mem::take(&mut self.cancels).into_iter().collect()
    }

    /// For each parent id, whether the job holds it (and it was not
    /// deleted).
    pub fn parents_known(&self, job: &StreamId, ids: &[TaskId]) -> Vec<bool> {
        // A job without dependencies is refused for it by name later.
        let graph = self.deps.get(job);
        ids.iter()
            .map(|id| graph.is_none_or(|g| g.holds(id.as_str())))
            .collect()
    }

    /// For each range, whether it selects a task of the job now.
    pub fn ranges_select(
        &self,
        job: &StreamId,
        ranges: &[crate::domain::task_spec::TaskIdRange],
    ) -> Vec<bool> {
        // A job without dependencies is refused for it by name later.
        let graph = self.deps.get(job);
        ranges
            .iter()
            .map(|r| graph.is_none_or(|g| g.selects(r.start, r.end)))
            .collect()
    }

    /// A job's unfinished tasks: queued ones (those waiting for their
    /// parents too), and held ones with their attempt.
    /// A job's queued tasks moved to its new priority, keeping their
    /// submission order. Tasks still held for their parents keep the
    /// priority they were added with.
    fn requeue_at_priority(&mut self, job: &StreamId, priority: i32) {
        let of_job = |t: &QueuedTask| t.job_stream() == job;
        for (_, (pool, key)) in self.queued.iter_mut() {
            let Some(p) = self.pools.get_mut(&**pool) else {
                continue;
            };
            let PoolState { queue, parked, .. } = p;
            for map in [queue, parked] {
                if !map.get(key).is_some_and(of_job) {
                    continue;
                }
                if let Some(task) = map.remove(key) {
                    key.0 = Reverse(priority);
                    map.insert(*key, task);
                }
                break;
            }
        }
    }

    /// Moves a job's queued tasks out of the rounds' way (`park`) or back
    /// into them, keeping their keys. Once per change of the job's state.
    fn park_job(&mut self, job: &StreamId, park: bool) {
        let of_job = |t: &QueuedTask| t.job_stream() == job;
        for (pool, key) in self.queued.values() {
            let Some(p) = self.pools.get_mut(&**pool) else {
                continue;
            };
            let PoolState { queue, parked, .. } = p;
            let (from, to) = if park {
                (queue, parked)
            } else {
                (parked, queue)
            };
            if from.get(key).is_some_and(of_job) {
                if let Some(task) = from.remove(key) {
                    to.insert(*key, task);
                }
            }
        }
        for p in self.pools.values_mut() {
            if p.queue.is_empty() {
                p.draining = false;
            }
        }
    }

    pub fn tasks_of_job(&self, job: &StreamId) -> (Vec<StreamId>, Vec<HeldTask>) {
        let of_job = |t: &QueuedTask| t.job_stream() == job;
        let mut queued: Vec<StreamId> = self
            .queued
            .iter()
            .filter(|(_, (pool, key))| {
                self.pools
                    .get(&**pool)
                    .and_then(|p| p.get(key))
                    .is_some_and(of_job)
            })
            .map(|(s, _)| s.clone())
            .collect();
        if let Some(graph) = self.deps.get(job) {
            queued.extend(graph.held_streams().cloned());
        }
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
    pub fn drained_leaving(&self) -> Vec<(SharedStr, NodeId)> {
        let mut out: Vec<(SharedStr, NodeId)> = self
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
        self.pools.keys().map(|k| k.to_string()).collect()
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
    pub fn holder(&self, stream: &StreamId) -> Option<(SharedStr, NodeId)> {
        self.holding
            .get(stream)
            .map(|h| (h.pool_key.clone(), h.node.clone()))
    }
}
