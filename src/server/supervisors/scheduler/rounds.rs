//! Placement rounds: free slots filled in priority order, long queues
//! prefetched behind busy slots, waiting work moved to idle nodes.

use super::*;

impl Scheduler {
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
        let pool_keys: Vec<SharedStr> = self
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
                let stream = StreamId::task(task.account(), task.job(), &task.task);
                self.queued.remove(&stream);
                out.push(Planned {
                    stream: stream.clone(),
                    account: task.account().clone(),
                    pool: pool_id,
                    job: task.job().clone(),
                    task: task.task.clone(),
                    node: node.clone(),
                });
                self.hold(&stream, key.clone(), node, qkey, task);
            }
        }
        out
    }

    /// Queue entries that fit in `free`, in queue order, by `policy`.
    pub(super) fn pick(
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
            let job = task.job_stream();
            let Some(info) = self.jobs.get(job).filter(|j| j.state == JobState::Active) else {
                continue;
            };
            let fits = free
                .iter_mut()
                .filter(|(n, f)| *f >= task.slots && self.prep_allows(info, n));
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

    /// Takes off a node's list to start the attempts its agent reported
    /// ended: recorded in the log, their completions perhaps not folded
    /// yet. Its next poll must not be handed them again; the fold of each
    /// completion frees the slot as before.
    pub fn forget_ended(
        &mut self,
        account: &AccountName,
        pool: &PoolId,
        node: &NodeId,
        ended: impl IntoIterator<Item = (JobId, TaskId, u32)>,
    ) {
        let Some(n) = self.nodes.get_mut(&(pool_key(account, pool), node.clone())) else {
            return;
        };
        for (job, task, attempt) in ended {
            let item = (job, task);
            if n.to_start.get(&item) == Some(&attempt) {
                n.to_start.remove(&item);
            }
        }
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
}
