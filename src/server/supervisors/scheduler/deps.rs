//! Task dependencies in the picture: per job that uses them, which tasks
//! wait for which, folded from the log like the rest. A task with
//! unfinished parents is held out of its pool's queue and enqueued when
//! its last parent is satisfied; a parent that ends for good is resolved
//! once (its exit conditions against its outcome) and its dependents are
//! satisfied, blocked or marked to cancel. Parents precede their
//! dependents in the log (a batch is added parents first), so a
//! dependent's parents are known when it is folded.
//!
//! Memory: a task of such a job costs one entry (`Node`) and its id once
//! (shared by the index and the entry); an edge costs 8 bytes (`Edge`,
//! a dependent list kept as linked entries in one vector).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{QueueKey, QueuedTask};
use crate::domain::task::FailureCategory;
use crate::domain::task_deps::{resolve, Outcome};
use crate::domain::task_spec::{DependencyAction, ExitConditions, TaskDependencies};
use crate::store::StreamId;

const NONE: u32 = u32::MAX;

/// Where a held task goes once ready.
#[derive(Debug)]
pub(super) struct Held {
    pub stream: StreamId,
    pub pool: String,
    pub key: QueueKey,
    pub task: QueuedTask,
}

/// How a task stands toward its dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    Unfinished,
    Final(DependencyAction),
}

#[derive(Debug)]
struct Node {
    id: Arc<str>,
    /// First entry of its dependents' list in `edges`.
    first_dependent: u32,
    /// Parents not resolved yet.
    waiting: u32,
    /// Every parent it was given.
    parents: u32,
    resolution: Resolution,
    /// The parent that blocked or cancelled it, first one only.
    stopped_by: u32,
    /// Its last attempt's outcome, until it is final.
    last: Option<(Outcome, Option<FailureCategory>)>,
    exit: Option<Box<ExitConditions>>,
    /// Out of the queue until its parents allow it.
    held: Option<Box<Held>>,
}

#[derive(Debug, Clone, Copy)]
struct Edge {
    dependent: u32,
    next: u32,
}

/// A parent's state as a waiting task's explanation names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentState {
    /// Waiting for its own parents.
    Waiting,
    /// Queued, placed or running (the picture says which).
    Unfinished,
    /// Ended, and its outcome blocks or cancels.
    Failed(DependencyAction, String),
}

/// Why a held task does not run yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyWait {
    /// Parents not done: how many of how many, and the first few of them.
    Waiting {
        waiting: u32,
        of: u32,
        first: Vec<(String, ParentState)>,
    },
    /// A parent failed and the policy keeps it waiting for good.
    Blocked { parent: String, outcome: String },
    /// A parent failed and the policy cancels it (being recorded).
    Cancelling { parent: String, outcome: String },
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
    ids: HashMap<Arc<str>, u32>,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    /// Tasks whose ids are integers, for ranges.
    numeric: BTreeSet<(u64, u32)>,
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
            ids: HashMap::new(),
            nodes: Vec::new(),
            edges: Vec::new(),
            numeric: BTreeSet::new(),
        }
    }

    /// Folds a task's addition. Its held entry is kept when it must wait;
    /// otherwise it is given back to be enqueued now. A parent that
    /// already failed under the cancel policy marks it to cancel.
    pub fn add(
        &mut self,
        depends_on: &TaskDependencies,
        exit: Option<Box<ExitConditions>>,
        held: Held,
        effects: &mut Effects,
    ) -> Option<Held> {
        let id: Arc<str> = Arc::from(held.task.task.as_str());
        let me = self.nodes.len() as u32;
        let mut parents: Vec<u32> = depends_on
            .task_ids
            .iter()
            .filter_map(|t| self.ids.get(t.as_str()).copied())
            .collect();
        for r in &depends_on.ranges {
            parents.extend(
                self.numeric
                    .range((r.start, 0)..=(r.end, u32::MAX))
                    .map(|(_, i)| *i),
            );
        }
        parents.sort_unstable();
        parents.dedup();
        let mut node = Node {
            id: id.clone(),
            first_dependent: NONE,
            waiting: 0,
            parents: parents.len() as u32,
            resolution: Resolution::Unfinished,
            stopped_by: NONE,
            last: None,
            exit,
            held: None,
        };
        for &p in &parents {
            match self.nodes[p as usize].resolution {
                Resolution::Unfinished => {
                    node.waiting += 1;
                    let edge = Edge {
                        dependent: me,
                        next: self.nodes[p as usize].first_dependent,
                    };
                    self.nodes[p as usize].first_dependent = self.edges.len() as u32;
                    self.edges.push(edge);
                }
                Resolution::Final(DependencyAction::Satisfy) => {}
                Resolution::Final(DependencyAction::Block) => {
                    if node.stopped_by == NONE {
                        node.stopped_by = p;
                    }
                }
                Resolution::Final(DependencyAction::Cancel) => {
                    if node.stopped_by == NONE {
                        node.stopped_by = p;
                        effects
                            .cancel
                            .push((id.to_string(), self.cancel_reason(p)));
                    }
                }
            }
        }
        if let Some(n) = crate::domain::task_spec::numeric_id(&id) {
            self.numeric.insert((n, me));
        }
        // A re-added id (its first task deleted) names the new task from
        // now on; dependents of the old one keep theirs.
        self.ids.insert(id, me);
        let ready = node.waiting == 0 && node.stopped_by == NONE;
        if !ready {
            node.held = Some(Box::new(held));
            self.nodes.push(node);
            return None;
        }
        self.nodes.push(node);
        Some(held)
    }

    fn cancel_reason(&self, parent: u32) -> String {
        let p = &self.nodes[parent as usize];
        let words = p
            .last
            .map(|(o, c)| outcome_words(o, c))
            .unwrap_or_else(|| "failed".into());
        format!("a parent failed: {}, {words}", p.id)
    }

    /// Records an attempt's outcome (final only once the job's counts say
    /// so: a retry follows a failure with retries left).
    pub fn attempt_ended(&mut self, task: &str, outcome: Outcome, category: Option<FailureCategory>) {
        if let Some(&i) = self.ids.get(task) {
            self.nodes[i as usize].last = Some((outcome, category));
        }
    }

    /// The last attempt is not final after all (retried).
    pub fn retried(&mut self, task: &str) {
        if let Some(&i) = self.ids.get(task) {
            self.nodes[i as usize].last = None;
        }
    }

    /// A task ended for good: resolves what it means for its dependents.
    /// Its held entry (a task ended while it waited) is dropped.
    pub fn finished(&mut self, task: &str, effects: &mut Effects) {
        let Some(&i) = self.ids.get(task) else {
            return;
        };
        let node = &mut self.nodes[i as usize];
        if node.resolution != Resolution::Unfinished {
            return;
        }
        node.held = None;
        let (outcome, _) = node.last.unwrap_or((Outcome::Other, None));
        let (_, action) = resolve(node.exit.as_deref(), outcome, self.on_failed_parent);
        node.resolution = Resolution::Final(action);
        let mut e = node.first_dependent;
        let mut reason = None;
        while e != NONE {
            let Edge { dependent, next } = self.edges[e as usize];
            e = next;
            let d = &mut self.nodes[dependent as usize];
            d.waiting = d.waiting.saturating_sub(1);
            match action {
                DependencyAction::Satisfy => {
                    if d.waiting == 0 && d.stopped_by == NONE {
                        if let Some(h) = d.held.take() {
                            effects.ready.push(*h);
                        }
                    }
                }
                DependencyAction::Block => {
                    if d.stopped_by == NONE {
                        d.stopped_by = i;
                    }
                }
                DependencyAction::Cancel => {
                    if d.stopped_by == NONE && d.resolution == Resolution::Unfinished {
                        d.stopped_by = i;
                        let id = d.id.to_string();
                        let why = reason.get_or_insert_with(|| self.cancel_reason(i)).clone();
                        effects.cancel.push((id, why));
                    }
                }
            }
        }
    }

    /// Whether the task is held out of the queue, and why.
    pub fn wait_of(&self, task: &str, limit: usize) -> Option<DependencyWait> {
        let &i = self.ids.get(task)?;
        let node = &self.nodes[i as usize];
        if node.held.is_none() || node.resolution != Resolution::Unfinished {
            return None;
        }
        if node.stopped_by != NONE {
            let p = &self.nodes[node.stopped_by as usize];
            let outcome = p
                .last
                .map(|(o, c)| outcome_words(o, c))
                .unwrap_or_else(|| "failed".into());
            let parent = p.id.to_string();
            return Some(match p.resolution {
                Resolution::Final(DependencyAction::Cancel) => {
                    DependencyWait::Cancelling { parent, outcome }
                }
                _ => DependencyWait::Blocked { parent, outcome },
            });
        }
        Some(DependencyWait::Waiting {
            waiting: node.waiting,
            of: node.parents,
            first: Vec::new(),
        })
        .map(|w| self.name_parents(i, w, limit))
    }

    /// Fills in the first unfinished parents of a waiting task: the graph
    /// keeps edges from parent to dependent only, so they are found by
    /// walking the tasks added before it (an explanation, not a hot path).
    fn name_parents(&self, me: u32, wait: DependencyWait, limit: usize) -> DependencyWait {
        let DependencyWait::Waiting { waiting, of, .. } = wait else {
            return wait;
        };
        let mut first = Vec::new();
        for (p, node) in self.nodes[..me as usize].iter().enumerate() {
            if first.len() >= limit {
                break;
            }
            if node.resolution != Resolution::Unfinished {
                continue;
            }
            let mut e = node.first_dependent;
            while e != NONE {
                let edge = self.edges[e as usize];
                if edge.dependent == me {
                    let state = if node.held.is_some() {
                        ParentState::Waiting
                    } else {
                        ParentState::Unfinished
                    };
                    first.push((self.nodes[p].id.to_string(), state));
                    break;
                }
                e = edge.next;
            }
        }
        DependencyWait::Waiting {
            waiting,
            of,
            first,
        }
    }

    /// The pool and slots of a held task.
    pub fn held_where(&self, task: &str) -> Option<(String, u32)> {
        let &i = self.ids.get(task)?;
        let h = self.nodes[i as usize].held.as_ref()?;
        Some((h.pool.clone(), h.task.slots))
    }

    /// Held tasks (for a job's terminate or delete, which reach every
    /// unfinished task).
    pub fn held_streams(&self) -> impl Iterator<Item = &StreamId> {
        self.nodes
            .iter()
            .filter_map(|n| n.held.as_ref().map(|h| &h.stream))
    }

    /// Bytes the graph holds, roughly (for the benchmark's per-edge
    /// figure): its vectors, its index and the ids.
    pub fn approx_bytes(&self) -> usize {
        let ids: usize = self.nodes.iter().map(|n| n.id.len() + 16).sum();
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.edges.capacity() * std::mem::size_of::<Edge>()
            + self.ids.capacity() * (std::mem::size_of::<(Arc<str>, u32)>() + 1)
            + self.numeric.len() * 24
            + ids
    }
}
