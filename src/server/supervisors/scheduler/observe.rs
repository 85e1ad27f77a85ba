//! Folding the log into the picture: pools, nodes, jobs, queued and
//! placed tasks.

use super::*;
use crate::domain::task::{FailureCategory, Outcome};

/// A task stream's job stream and task id.
fn job_and_task(stream: &StreamId) -> Option<(StreamId, String)> {
    let task = stream.as_str().rsplit('/').next()?.to_string();
    Some((stream.job_of_task()?, task))
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
                let key: SharedStr = ids[..2].join("/").into();
                match event {
                    PoolEvent::PoolCreated { spec, .. } => {
                        let pool = self.pool_mut(key);
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
                        if let Some(d) = spec.dependencies {
                            self.deps
                                .insert(stream.clone(), deps::Graph::new(d.on_failed_parent));
                        }
                        let prep = prep::JobPrep::of(&spec);
                        self.jobs.insert(
                            stream.clone(),
                            JobInfo {
                                of: JobRef::new(spec.account.clone(), spec.id.clone()),
                                prep,
                                common_env: std::sync::Arc::new(spec.common_env),
                                priority: spec.priority,
                                state: JobState::Active,
                                created: at,
                                deadline: spec.max_wall_clock_secs.map(|s| at.plus_secs(s)),
                                terminating: false,
                                manager: spec.job_manager.map(|m| (m.task.id, at)),
                                resource_files: std::sync::Arc::new(spec.common_resource_files),
                            },
                        );
                        return;
                    }
                    JobEvent::JobUpdated { spec, .. } => {
                        self.job_updated(stream, &spec);
                        return;
                    }
                    JobEvent::JobDisabled { .. } => JobState::Held,
                    JobEvent::JobEnabled { .. } => JobState::Active,
                    JobEvent::JobTerminating { .. } => JobState::Closed,
                    JobEvent::JobCompleted { .. } | JobEvent::JobDeleted { .. } => {
                        // A deleted job's held tasks are still to be
                        // terminated (its saga asks for them): the graph
                        // goes with the last of them.
                        if self.deps.get(stream).is_some_and(|g| g.held_count() == 0) {
                            self.deps.remove(stream);
                        }
                        JobState::Closed
                    }
                    JobEvent::JobPreparationEnded { node, status, .. } => {
                        self.preparation_ended(stream, node, status.succeeded);
                        return;
                    }
                    JobEvent::JobReleaseEnded { node, .. } => {
                        self.release_ended(stream, &node);
                        return;
                    }
                    JobEvent::JobTaskCountsChanged { task, from, to } => {
                        use crate::domain::task::TaskBucket as B;
                        let open = |b: &Option<B>| matches!(b, Some(B::Active | B::Running));
                        if open(&from) && !open(&to) {
                            self.parent_finished(stream, &task);
                        }
                        return;
                    }
                    _ => return,
                };
                let mut was_active = None;
                if let Some(job) = self.jobs.get_mut(stream) {
                    was_active = Some(job.state == JobState::Active);
                    job.state = state;
                    job.terminating = matches!(event, JobEvent::JobTerminating { .. });
                }
                let active = state == JobState::Active;
                if was_active.is_some_and(|was| was != active) {
                    self.park_job(stream, !active);
                }
                if state == JobState::Closed {
                    self.job_ended(stream);
                }
            }
            StreamKind::Node => {
                let Ok(event) = decode_event::<NodeEvent>(StreamKind::Node, envelope) else {
                    return;
                };
                let key: SharedStr = ids[..2].join("/").into();
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
            StreamKind::Account | StreamKind::Request | StreamKind::Schedule | StreamKind::App => {}
        }
    }

    pub(super) fn observe_task(&mut self, envelope: &Envelope) {
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
                let job_stream = StreamId::job(&account, &job);
                let (priority, of) = match self.jobs.get(&job_stream) {
                    Some(j) => (j.priority, j.of.clone()),
                    None => (0, JobRef::new(account.clone(), job)),
                };
                let task = QueuedTask {
                    of,
                    task: spec.id,
                    slots: spec.required_slots.max(1),
                };
                let held = deps::Held::new(
                    stream.clone(),
                    pool_key(&account, &pool),
                    (Reverse(priority), envelope.position),
                    task,
                );
                let ready = match self.deps.get_mut(&job_stream) {
                    Some(graph) => {
                        let mut effects = deps::Effects::default();
                        let ready =
                            graph.add(&spec.depends_on, spec.exit_conditions, held, &mut effects);
                        self.apply_effects(&job_stream, effects);
                        ready
                    }
                    None => Some(held),
                };
                if let Some(h) = ready {
                    self.enqueue(&h.stream, h.pool, h.key, h.task);
                }
            }
            TaskEvent::TaskAssigned {
                placement, attempt, ..
            } => {
                // Planned by this scheduler: slots already reserved. After
                // a restart: reserve them now.
                if !self.holding.contains_key(stream) {
                    if let Some((pool, key)) = self.queued.remove(stream) {
                        let task = self.pools.get_mut(&*pool).and_then(|p| p.take(&key));
                        if let Some(task) = task {
                            self.hold(stream, pool, placement.node.clone(), key, task);
                        }
                    }
                }
                if let Some(h) = self.holding.get_mut(stream) {
                    h.attempt = attempt;
                    let k = (h.pool_key.clone(), h.node.clone());
                    let item = (h.task.job().clone(), h.task.task.clone());
                    if let Some(node) = self.nodes.get_mut(&k) {
                        node.to_start.insert(item, attempt);
                    }
                }
            }
            TaskEvent::TaskStarted { .. } => {
                if let Some(h) = self.holding.get_mut(stream) {
                    let k = (h.pool_key.clone(), h.node.clone());
                    let item = (h.task.job().clone(), h.task.task.clone());
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
                let category = result.failure.as_ref().map(|(c, _)| *c);
                self.attempt_ended(stream, result.outcome(), category);
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
            TaskEvent::TaskTerminated { .. }
            | TaskEvent::TaskDeleted { .. }
            | TaskEvent::TaskCancelled { .. } => {
                self.ended_by_others(stream, &event);
                let pool = self
                    .release(stream)
                    .map(|h| h.pool_key)
                    .or_else(|| self.queued.get(stream).map(|(p, _)| p.clone()));
                let failed = !matches!(event, TaskEvent::TaskDeleted { .. });
                if let (true, Some(p)) = (failed, pool) {
                    if let Some(p) = self.pools.get_mut(&p) {
                        p.failed += 1;
                    }
                }
                if let Some((pool, key)) = self.queued.remove(stream) {
                    if let Some(p) = self.pools.get_mut(&*pool) {
                        p.take(&key);
                    }
                }
            }
            // Recorded just before its completion; holds nothing.
            TaskEvent::TaskOutputsUploaded { .. } => {}
            TaskEvent::TaskRetried { .. } | TaskEvent::TaskRequeued { .. } => {
                if let (TaskEvent::TaskRetried { .. }, Some((g, task))) =
                    (&event, self.task_graph(stream))
                {
                    g.retried(&task);
                }
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

    /// The dependency graph of a task's job, with the task's id (none when
    /// its job has none: the common case costs one emptiness check).
    fn task_graph(&mut self, stream: &StreamId) -> Option<(&mut deps::Graph, String)> {
        if self.deps.is_empty() {
            return None;
        }
        let (job, task) = job_and_task(stream)?;
        Some((self.deps.get_mut(&job)?, task))
    }

    /// A task ended by a user, its job or its parents (terminated,
    /// cancelled, deleted), for the graph of its job if it has one.
    fn ended_by_others(&mut self, stream: &StreamId, event: &TaskEvent) {
        let Some((g, task)) = self.task_graph(stream) else {
            return;
        };
        let (outcome, category) = match event {
            TaskEvent::TaskTerminated { .. } => (Outcome::Other, Some(FailureCategory::Terminated)),
            TaskEvent::TaskCancelled { .. } => {
                (Outcome::ParentFailed, Some(FailureCategory::ParentFailed))
            }
            _ => {
                g.deleted(&task);
                (Outcome::Other, None)
            }
        };
        g.attempt_ended(&task, outcome, category);
    }

    /// An attempt's outcome, for the graph of its job if it has one.
    fn attempt_ended(
        &mut self,
        stream: &StreamId,
        outcome: Outcome,
        category: Option<FailureCategory>,
    ) {
        if let Some((g, task)) = self.task_graph(stream) {
            g.attempt_ended(&task, outcome, category);
        }
    }

    /// A task of `job` ended for good (its job's counts say so).
    fn parent_finished(&mut self, job: &StreamId, task: &TaskId) {
        let Some(graph) = self.deps.get_mut(job) else {
            return;
        };
        let mut effects = deps::Effects::default();
        graph.finished(task.as_str(), &mut effects);
        let emptied = graph.held_count() == 0;
        if let Some(stream) = job.task_of_job(task.as_str()) {
            self.cancels.remove(&stream);
        }
        self.apply_effects(job, effects);
        let ended = self
            .jobs
            .get(job)
            .is_some_and(|j| j.state == JobState::Closed && !j.terminating);
        if emptied && ended {
            self.deps.remove(job);
        }
    }

    fn apply_effects(&mut self, job: &StreamId, effects: deps::Effects) {
        for h in effects.ready {
            self.enqueue(&h.stream, h.pool, h.key, h.task);
        }
        if effects.cancel.is_empty() {
            return;
        }
        for (task, why) in effects.cancel {
            if let Some(stream) = job.task_of_job(&task) {
                self.cancels.insert(stream, why);
            }
        }
    }

    pub(super) fn enqueue(
        &mut self,
        stream: &StreamId,
        pool: SharedStr,
        key: QueueKey,
        task: QueuedTask,
    ) {
        let class = (task.job_stream().clone(), task.slots);
        // A job not yet seen is placeable as before: rounds skip it until
        // its creation is folded.
        let placeable = self
            .jobs
            .get(&class.0)
            .is_none_or(|j| j.state == JobState::Active);
        let p = self.pool_mut(pool);
        let map = if placeable {
            &mut p.queue
        } else {
            &mut p.parked
        };
        if map.insert(key, task).is_none() {
            *p.classes.entry(class).or_default() += 1;
        }
        let shared = p.key.clone();
        self.queued.insert(stream.clone(), (shared, key));
    }

    pub(super) fn hold(
        &mut self,
        stream: &StreamId,
        pool: SharedStr,
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
    pub(super) fn release(&mut self, stream: &StreamId) -> Option<Holding> {
        let h = self.holding.remove(stream)?;
        if let Some(n) = self.nodes.get_mut(&(h.pool_key.clone(), h.node.clone())) {
            n.used = n.used.saturating_sub(h.slots);
            if h.started {
                n.started_slots = n.started_slots.saturating_sub(h.slots);
            }
            n.to_start
                .remove(&(h.task.job().clone(), h.task.task.clone()));
        }
        Some(h)
    }
}

impl Scheduler {
    /// New settings of a job: priority orders placement from the next
    /// round (its queued tasks move); the wall clock still counts from
    /// creation.
    fn job_updated(&mut self, stream: &StreamId, spec: &crate::domain::job::JobSpec) {
        let Some(job) = self.jobs.get_mut(stream) else {
            return;
        };
        let moved = job.priority != spec.priority;
        job.priority = spec.priority;
        job.deadline = spec.max_wall_clock_secs.map(|s| job.created.plus_secs(s));
        if moved {
            self.requeue_at_priority(stream, spec.priority);
        }
    }
}
