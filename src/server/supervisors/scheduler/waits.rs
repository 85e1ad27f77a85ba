//! What the picture says about load and waiting: a pool's figures for
//! autoscale, and every reason a queued task is not running.

use super::*;

impl Scheduler {
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
            active_tasks: pool.queued_len() as u64,
            active_slots: (pool.queue.values().chain(pool.parked.values()))
                .map(|t| u64::from(t.slots))
                .sum(),
            succeeded_tasks: pool.succeeded,
            failed_tasks: pool.failed,
            nodes: pool.nodes.len() as u64,
            slots_per_node: pool.slots_per_node,
            ..PoolFigures::default()
        };
        for h in self.holding.values().filter(|h| &*h.pool_key == pool_key) {
            f.running_tasks += 1;
            f.running_slots += u64::from(h.slots);
        }
        f.usable_nodes = pool
            .nodes
            .iter()
            .filter(|n| {
                self.nodes
                    .get(&(pool.key.clone(), (*n).clone()))
                    .is_some_and(|s| s.schedulable)
            })
            .count() as u64;
        f
    }

    /// Every reason the tasks of `job` needing `slots` slots wait in the
    /// pool's queue, but their places in it.
    pub(super) fn shared_reasons(
        &self,
        pool_key: &str,
        job: &StreamId,
        slots: u32,
    ) -> Vec<WaitReason> {
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
                    .filter_map(|n| self.nodes.get(&(p.key.clone(), n.clone())))
                    .collect()
            })
            .unwrap_or_default();
        if nodes.is_empty() {
            reasons.push(WaitReason::NoNodes);
            return reasons;
        }
        if let Some(refused) = self.prep_refused(pool_key, job) {
            reasons.push(WaitReason::PreparationFailed {
                nodes: refused,
                of: nodes.len() as u32,
            });
        }
        let working: Vec<&&NodeState> = nodes.iter().filter(|n| n.schedulable).collect();
        let [starting, waiting_for_start_task, start_task_failed, offline, unusable, rebooting, leaving] =
            not_working(&nodes);
        if !working.is_empty() && working.len() < nodes.len() {
            reasons.push(WaitReason::SomeNodesNotWorking {
                nodes: (nodes.len() - working.len()) as u32,
                of: nodes.len() as u32,
                starting,
                waiting_for_start_task,
                start_task_failed,
                offline,
                unusable,
                rebooting,
                leaving,
            });
        }
        if working.is_empty() {
            if start_task_failed as usize == nodes.len() {
                reasons.push(WaitReason::StartTaskFailedEverywhere {
                    nodes: start_task_failed,
                });
            } else {
                reasons.push(WaitReason::NodesNotReady {
                    starting,
                    waiting_for_start_task,
                    start_task_failed,
                    offline,
                    unusable,
                    rebooting,
                    leaving,
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
        let Some((pool_key, key)) = self.queued.get(stream) else {
            return self.explain_dependent(stream);
        };
        let pool = self.pools.get(&**pool_key)?;
        let task = pool.get(key)?;
        let mut reasons = self.shared_reasons(pool_key, task.job_stream(), task.slots);
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
        Some((pool_key.to_string(), task.slots, reasons))
    }

    /// A task held out of the queue by its parents.
    fn explain_dependent(&self, stream: &StreamId) -> Option<(String, u32, Vec<WaitReason>)> {
        let job = stream.job_of_task()?;
        let task = stream.as_str().rsplit('/').next()?;
        let graph = self.deps.get(&job)?;
        let (pool, slots) = graph.held_where(task)?;
        let place = |parent: &str| {
            job.task_of_job(parent)
                .map(|s| self.where_is(&s))
                .unwrap_or_default()
        };
        let reason = graph.wait_of(task, 5, place)?;
        Some((pool.to_string(), slots, vec![reason]))
    }

    /// "queued", "running on node-1", "assigned to node-2": an unfinished
    /// task as the picture holds it.
    fn where_is(&self, stream: &StreamId) -> String {
        match self.holding.get(stream) {
            Some(h) if h.started => format!("running on {}", h.node),
            Some(h) => format!("assigned to {}", h.node),
            None if self.queued.contains_key(stream) => "queued".into(),
            None => "ending".into(),
        }
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
                        pool_key.to_string(),
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
        if let Some(graph) = self.deps.get(job) {
            let (held, blocked, pool) = graph.held_summary();
            if let (true, Some(pool)) = (held > 0, pool) {
                out.push((
                    pool.to_string(),
                    WaitGroup {
                        tasks: held,
                        slots: 1,
                        reasons: vec![WaitReason::HeldByParents { blocked }],
                    },
                ));
            }
        }
        out
    }

    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// Dependency edges ever recorded in open jobs, and the bytes their
    /// graphs hold (for the placement benchmark's per-edge figure).
    pub fn dependency_footprint(&self) -> (u64, usize) {
        self.deps.values().fold((0, 0), |(e, b), g| {
            (e + g.edges() as u64, b + g.approx_bytes())
        })
    }
}

/// How many of the nodes that take no work are in each state, in the order
/// of [`WaitReason::NodesNotReady`]'s fields: starting, running the start
/// task, start task failed, offline, unusable, rebooting, leaving.
fn not_working(nodes: &[&NodeState]) -> [u32; 7] {
    use crate::domain::node::NodeState as S;
    let mut counts = [0u32; 7];
    for n in nodes.iter().filter(|n| !n.schedulable) {
        let i = match n.state() {
            S::Creating | S::Starting => 0,
            S::WaitingForStartTask => 1,
            S::StartTaskFailed => 2,
            S::Offline => 3,
            S::Unusable => 4,
            S::Rebooting => 5,
            S::LeavingPool => 6,
            _ => continue,
        };
        counts[i] += 1;
    }
    counts
}
