//! Task dependencies in the picture: per job that uses them, which tasks
//! wait for which, folded from the log like the rest. A task with
//! unfinished parents is held out of its pool's queue and enqueued when
//! its last parent is satisfied; a parent that ends for good is resolved
//! once (its exit conditions against its outcome) and its dependents are
//! satisfied, blocked or marked to cancel. Parents precede their
//! dependents in the log (a batch is added parents first), so a
//! dependent's parents are known when it is folded.
//!
//! Memory is what bounds a job of a million tasks, so every task of such
//! a job costs only its id (in one string of all ids, with its end
//! offset), a slot in an index over that string, 8 bytes of state and, if
//! its id is an integer, an entry in the numeric index; an edge costs 8
//! bytes (dependents are linked lists in one vector). What few tasks need
//! more (exit conditions, a failed outcome, a held queue entry) is kept
//! beside, by task number.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::{QueueKey, QueuedTask};
use crate::api::explain::WaitReason;
use crate::domain::task::FailureCategory;
use crate::domain::task_deps::{resolve, Outcome};
use crate::domain::task_spec::{DependencyAction, ExitConditions, TaskDependencies};
use crate::store::StreamId;

const NONE: u32 = u32::MAX;

/// Where a held task goes once ready, and what holds it.
#[derive(Debug)]
pub(super) struct Held {
    pub stream: StreamId,
    pub pool: crate::types::SharedStr,
    pub key: QueueKey,
    pub task: QueuedTask,
    /// Parents it was given, and those not resolved yet.
    parents: u32,
    waiting: u32,
    /// The parent whose failure blocked or cancelled it, if one did.
    stopped_by: u32,
}

impl Held {
    pub fn new(
        stream: StreamId,
        pool: crate::types::SharedStr,
        key: QueueKey,
        task: QueuedTask,
    ) -> Self {
        Held {
            stream,
            pool,
            key,
            task,
            parents: 0,
            waiting: 0,
            stopped_by: NONE,
        }
    }
}

/// A task's 4 bytes: its first dependent's edge (lower 30 bits) and its
/// resolution (upper 2: unfinished, satisfy, block, cancel).
#[derive(Debug, Clone, Copy)]
struct Node(u32);

/// No edge (also the most edges one job's graph holds, a billion).
const NO_EDGE: u32 = (1 << 30) - 1;

fn code(action: DependencyAction) -> u32 {
    match action {
        DependencyAction::Satisfy => 1,
        DependencyAction::Block => 2,
        DependencyAction::Cancel => 3,
    }
}

impl Node {
    const NEW: Node = Node(NO_EDGE);

    fn resolution(self) -> Option<DependencyAction> {
        match self.0 >> 30 {
            1 => Some(DependencyAction::Satisfy),
            2 => Some(DependencyAction::Block),
            3 => Some(DependencyAction::Cancel),
            _ => None,
        }
    }
    fn first_dependent(self) -> u32 {
        self.0 & NO_EDGE
    }
    fn set_first_dependent(&mut self, edge: u32) {
        self.0 = (self.0 & !NO_EDGE) | (edge & NO_EDGE);
    }
    fn resolve(&mut self, a: DependencyAction) {
        self.0 = (self.0 & NO_EDGE) | (code(a) << 30);
    }
}

/// Grows a vector by an eighth at a time past a few thousand entries, not
/// by doubling: a graph's vectors are most of its memory.
fn make_room<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(4096));
    }
}

#[derive(Debug, Clone, Copy)]
struct Edge {
    dependent: u32,
    next: u32,
}

/// What ending a task did to its dependents.
#[derive(Debug, Default)]
pub(super) struct Effects {
    pub ready: Vec<Held>,
    /// Dependents to cancel, with why.
    pub cancel: Vec<(String, String)>,
}

#[derive(Debug)]
pub(super) struct Graph {
    on_failed_parent: DependencyAction,
    /// Every task's id end to end; task i's ends at `ends[i]`.
    names: String,
    ends: Vec<u32>,
    /// Task numbers by id, hashed with `hasher`, compared in `names`.
    index: HashTable<u32>,
    hasher: std::hash::RandomState,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    /// Tasks whose ids are integers, for ranges: the number's first task,
    /// and the rare others (`7` and `07`).
    numeric: BTreeMap<u64, u32>,
    numeric_more: Vec<(u64, u32)>,
    exits: HashMap<u32, Box<ExitConditions>>,
    /// The last failed outcome of a task (none: it succeeded or is
    /// unfinished).
    failures: HashMap<u32, (Outcome, Option<FailureCategory>)>,
    held: HashMap<u32, Box<Held>>,
    /// Tasks deleted (rare).
    deleted: std::collections::HashSet<u32>,
}

/// Task `i`'s id in the string of all ids.
fn name_at<'a>(names: &'a str, ends: &[u32], i: u32) -> &'a str {
    let i = i as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &names[start..ends[i] as usize]
}

/// "exit code 3", "could not start", ... : an outcome in a few words.
pub fn outcome_words(outcome: Outcome, category: Option<FailureCategory>) -> String {
    match outcome {
        Outcome::Succeeded => "succeeded".into(),
        Outcome::Exited {
            code,
            upload_failed: true,
        } => format!("exit code {code}, outputs not uploaded"),
        Outcome::Exited { code, .. } => format!("exit code {code}"),
        Outcome::PreProcessing => "could not start (inputs or command)".into(),
        Outcome::ParentFailed => "cancelled: a parent of its own failed".into(),
        Outcome::Other => match category {
            Some(c) => serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                .unwrap_or_else(|| "failed".into()),
            None => "deleted".into(),
        },
    }
}

impl Graph {
    pub fn new(on_failed_parent: DependencyAction) -> Self {
        Graph {
            on_failed_parent,
            names: String::new(),
            ends: Vec::new(),
            index: HashTable::new(),
            hasher: std::hash::RandomState::new(),
            nodes: Vec::new(),
            edges: Vec::new(),
            numeric: BTreeMap::new(),
            numeric_more: Vec::new(),
            exits: HashMap::new(),
            failures: HashMap::new(),
            held: HashMap::new(),
            deleted: std::collections::HashSet::new(),
        }
    }

    fn name(&self, i: u32) -> &str {
        name_at(&self.names, &self.ends, i)
    }

    fn find(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.index.find(hash, |&i| self.name(i) == id).copied()
    }

    /// The tasks numbered `start..=end`, in the job now.
    fn in_range(&self, start: u64, end: u64) -> impl Iterator<Item = u32> + '_ {
        self.numeric.range(start..=end).map(|(_, i)| *i).chain(
            self.numeric_more
                .iter()
                .filter(move |(n, _)| (start..=end).contains(n))
                .map(|(_, i)| *i),
        )
    }

    /// Whether a task of this id is in the job and was not deleted.
    pub fn holds(&self, task: &str) -> bool {
        self.find(task).is_some_and(|i| !self.deleted.contains(&i))
    }

    /// The task was deleted: no longer a parent a new task may name.
    pub fn deleted(&mut self, task: &str) {
        if let Some(i) = self.find(task) {
            self.deleted.insert(i);
        }
    }

    /// Whether a range selects any of the job's tasks.
    pub fn selects(&self, start: u64, end: u64) -> bool {
        self.in_range(start, end).next().is_some()
    }

    /// Folds a task's addition. Its held entry is kept when it must wait;
    /// otherwise it is given back to be enqueued now. A parent that
    /// already failed under the cancel policy marks it to cancel.
    pub fn add(
        &mut self,
        depends_on: &TaskDependencies,
        exit: Option<Box<ExitConditions>>,
        mut held: Held,
        effects: &mut Effects,
    ) -> Option<Held> {
        let me = self.nodes.len() as u32;
        let mut parents: Vec<u32> = depends_on
            .task_ids
            .iter()
            .filter_map(|t| self.find(t.as_str()))
            .collect();
        for r in &depends_on.ranges {
            parents.extend(self.in_range(r.start, r.end));
        }
        parents.sort_unstable();
        parents.dedup();
        held.parents = parents.len() as u32;
        let mut waiting = 0;
        for &p in &parents {
            match self.nodes[p as usize].resolution() {
                None if self.edges.len() < NO_EDGE as usize => {
                    waiting += 1;
                    make_room(&mut self.edges);
                    self.edges.push(Edge {
                        dependent: me,
                        next: self.nodes[p as usize].first_dependent(),
                    });
                    self.nodes[p as usize].set_first_dependent(self.edges.len() as u32 - 1);
                }
                // A billion edges in one job: more would not be tracked,
                // so the dependent is held for good (and says so).
                None => {
                    if held.stopped_by == NONE {
                        held.stopped_by = p;
                    }
                }
                Some(DependencyAction::Satisfy) => {}
                Some(a) => {
                    if held.stopped_by == NONE {
                        held.stopped_by = p;
                        if a == DependencyAction::Cancel {
                            let why = self.cancel_reason(p);
                            effects.cancel.push((held.task.task.to_string(), why));
                        }
                    }
                }
            }
        }
        held.waiting = waiting;
        let id = held.task.task.as_str();
        if self.names.len() == self.names.capacity() {
            self.names.reserve_exact((self.names.len() / 8).max(65_536));
        }
        self.names.push_str(id);
        make_room(&mut self.ends);
        self.ends.push(self.names.len() as u32);
        let hash = self.hasher.hash_one(id);
        // A re-added id (its first task deleted) names the new task from
        // now on; dependents of the old one keep theirs.
        let (names, ends, hasher) = (&self.names, &self.ends, &self.hasher);
        if let Ok(old) = self
            .index
            .find_entry(hash, |&i| name_at(names, ends, i) == id)
        {
            old.remove();
        }
        self.index
            .insert_unique(hash, me, |&i| hasher.hash_one(name_at(names, ends, i)));
        if let Some(n) = crate::domain::task_spec::numeric_id(id) {
            match self.numeric.entry(n) {
                std::collections::btree_map::Entry::Occupied(_) => self.numeric_more.push((n, me)),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(me);
                }
            }
        }
        if let Some(e) = exit {
            self.exits.insert(me, e);
        }
        make_room(&mut self.nodes);
        self.nodes.push(Node::NEW);
        if waiting == 0 && held.stopped_by == NONE {
            return Some(held);
        }
        self.held.insert(me, Box::new(held));
        None
    }

    fn outcome_of(&self, task: u32) -> (Outcome, Option<FailureCategory>) {
        self.failures
            .get(&task)
            .copied()
            .unwrap_or((Outcome::Succeeded, None))
    }

    fn cancel_reason(&self, parent: u32) -> String {
        let (o, c) = self.outcome_of(parent);
        format!(
            "a parent failed: {}, {}",
            self.name(parent),
            outcome_words(o, c)
        )
    }

    /// Records an attempt's outcome (final only once the job's counts say
    /// so: a retry follows a failure with retries left).
    pub fn attempt_ended(
        &mut self,
        task: &str,
        outcome: Outcome,
        category: Option<FailureCategory>,
    ) {
        let Some(i) = self.find(task) else {
            return;
        };
        if self.nodes[i as usize].resolution().is_some() {
            return;
        }
        if outcome == Outcome::Succeeded {
            self.failures.remove(&i);
        } else {
            self.failures.insert(i, (outcome, category));
        }
    }

    /// The last attempt is not final after all (retried).
    pub fn retried(&mut self, task: &str) {
        if let Some(i) = self.find(task) {
            self.failures.remove(&i);
        }
    }

    /// A task ended for good: resolves what it means for its dependents.
    /// Its held entry (a task ended while it waited) is dropped.
    pub fn finished(&mut self, task: &str, effects: &mut Effects) {
        let Some(i) = self.find(task) else {
            return;
        };
        if self.nodes[i as usize].resolution().is_some() {
            return;
        }
        self.held.remove(&i);
        let (outcome, _) = self.outcome_of(i);
        let exit = self.exits.remove(&i);
        let (_, action) = resolve(exit.as_deref(), outcome, self.on_failed_parent);
        self.nodes[i as usize].resolve(action);
        if action == DependencyAction::Satisfy {
            // Its outcome is never asked again.
            self.failures.remove(&i);
        }
        let mut e = self.nodes[i as usize].first_dependent();
        let mut reason: Option<String> = None;
        while e != NO_EDGE {
            let Edge { dependent, next } = self.edges[e as usize];
            e = next;
            // A dependent no longer held has ended (terminated, deleted).
            let Some(h) = self.held.get_mut(&dependent) else {
                continue;
            };
            h.waiting = h.waiting.saturating_sub(1);
            let ready = h.waiting == 0;
            match action {
                DependencyAction::Satisfy => {
                    if ready && h.stopped_by == NONE {
                        if let Some(h) = self.held.remove(&dependent) {
                            effects.ready.push(*h);
                        }
                    }
                }
                DependencyAction::Block => {
                    if h.stopped_by == NONE {
                        h.stopped_by = i;
                    }
                }
                DependencyAction::Cancel => {
                    if h.stopped_by == NONE {
                        h.stopped_by = i;
                        let id = h.task.task.to_string();
                        let why = match &reason {
                            Some(r) => r.clone(),
                            None => reason.insert(self.cancel_reason(i)).clone(),
                        };
                        effects.cancel.push((id, why));
                    }
                }
            }
        }
    }

    /// Why a held task does not run yet, in a wait reason. `place` words
    /// where an unfinished parent that is not itself held is ("queued",
    /// "running on node-1"): the picture knows, the graph does not.
    pub fn wait_of(
        &self,
        task: &str,
        limit: usize,
        place: impl Fn(&str) -> String,
    ) -> Option<WaitReason> {
        let i = self.find(task)?;
        let held = self.held.get(&i)?;
        if held.stopped_by != NONE {
            let p = held.stopped_by;
            let (o, c) = self.outcome_of(p);
            let (parent, outcome) = (self.name(p).to_string(), outcome_words(o, c));
            return Some(match self.nodes[p as usize].resolution() {
                Some(DependencyAction::Cancel) => WaitReason::CancelledByParent { parent, outcome },
                _ => WaitReason::BlockedByParent { parent, outcome },
            });
        }
        Some(WaitReason::WaitsForParents {
            waiting: held.waiting,
            of: held.parents,
            first: self.unfinished_parents(i, limit, place),
        })
    }

    /// The first unfinished parents of a waiting task, with where each is:
    /// the graph keeps edges from parent to dependent only, so they are
    /// found by walking the tasks added before it (an explanation, not a
    /// hot path).
    fn unfinished_parents(
        &self,
        me: u32,
        limit: usize,
        place: impl Fn(&str) -> String,
    ) -> Vec<(String, String)> {
        let mut first = Vec::new();
        for p in 0..me {
            if first.len() >= limit {
                break;
            }
            let node = self.nodes[p as usize];
            if node.resolution().is_some() {
                continue;
            }
            let mut e = node.first_dependent();
            while e != NO_EDGE {
                let edge = self.edges[e as usize];
                if edge.dependent == me {
                    let name = self.name(p);
                    let state = if self.held.contains_key(&p) {
                        "waiting for its own parents".to_string()
                    } else {
                        place(name)
                    };
                    first.push((name.to_string(), state));
                    break;
                }
                e = edge.next;
            }
        }
        first
    }

    /// The pool and slots of a held task.
    pub fn held_where(&self, task: &str) -> Option<(crate::types::SharedStr, u32)> {
        let h = self.held.get(&self.find(task)?)?;
        Some((h.pool.clone(), h.task.slots))
    }

    /// Tasks held, those of them stopped by a failed parent, and the pool
    /// they would queue in.
    pub fn held_summary(&self) -> (u64, u64, Option<crate::types::SharedStr>) {
        let blocked = self.held.values().filter(|h| h.stopped_by != NONE).count();
        let pool = self.held.values().next().map(|h| h.pool.clone());
        (self.held.len() as u64, blocked as u64, pool)
    }

    /// How many tasks it holds out of the queue.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Held tasks (for a job's terminate or delete, which reach every
    /// unfinished task).
    pub fn held_streams(&self) -> impl Iterator<Item = &StreamId> {
        self.held.values().map(|h| &h.stream)
    }

    /// Edges recorded.
    pub fn edges(&self) -> usize {
        self.edges.len()
    }

    /// Bytes the graph holds for every task of its job and every edge (its
    /// vectors at their capacity, its index, the numeric index at a B-tree
    /// entry's 12 bytes with a third of slack); the held queue entries are
    /// left out (a queued task holds the same).
    pub fn approx_bytes(&self) -> usize {
        self.names.capacity()
            + self.ends.capacity() * 4
            + self.index.allocation_size()
            + self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.edges.capacity() * std::mem::size_of::<Edge>()
            + self.numeric.len() * 16
            + self.numeric_more.capacity() * 16
            + self.exits.capacity() * 24
            + self.failures.capacity() * 24
    }
}
