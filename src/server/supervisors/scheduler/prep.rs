//! Jobs' preparation and release tasks in the picture: which nodes a job
//! may not use (its preparation failed there), which of its tasks to move
//! off such a node, and which releases a node's agent is to run.

use std::sync::Arc;

use super::*;
use crate::domain::job::JobSpec;
use crate::domain::job_prep::{JobPreparation, JobRelease};

/// A release for a node's agent: its job, itself, the job's variables.
pub type DueRelease = (JobId, JobRelease, Vec<crate::domain::EnvVar>);

/// A job's preparation and release, and where they ran.
#[derive(Debug)]
pub(super) struct JobPrep {
    pool_key: SharedStr,
    pub(super) preparation: Arc<JobPreparation>,
    release: Option<Arc<JobRelease>>,
    /// Nodes where its preparation ended.
    prepared: BTreeSet<NodeId>,
    /// Nodes where it failed and the job waits for success: none of its
    /// tasks go there.
    pub(super) refused: BTreeSet<NodeId>,
    released: BTreeSet<NodeId>,
}

impl JobPrep {
    pub(super) fn of(spec: &JobSpec) -> Option<Box<JobPrep>> {
        let preparation = spec.preparation.as_ref()?;
        Some(Box::new(JobPrep {
            pool_key: pool_key(&spec.account, &spec.pool),
            preparation: Arc::new((**preparation).clone()),
            release: spec.release.as_ref().map(|r| Arc::new((**r).clone())),
            prepared: BTreeSet::new(),
            refused: BTreeSet::new(),
            released: BTreeSet::new(),
        }))
    }
}

impl Scheduler {
    /// The job's preparation, for its tasks' assignments.
    pub fn job_preparation(&self, job: &StreamId) -> Option<Arc<JobPreparation>> {
        let prep = self.jobs.get(job)?.prep.as_ref()?;
        Some(prep.preparation.clone())
    }

    /// Releases a node's agent is to run now, but those it runs already.
    pub fn releases_for(
        &self,
        pool_key: &SharedStr,
        node: &NodeId,
        running: &[JobId],
    ) -> Vec<DueRelease> {
        let Some(jobs) = self.releases_due.get(&(pool_key.clone(), node.clone())) else {
            return Vec::new();
        };
        jobs.iter()
            .filter_map(|job| {
                let id = JobId::new(*job.segments().get(1)?).ok()?;
                let info = self.jobs.get(job)?;
                let release = info.prep.as_ref()?.release.as_ref()?;
                (!running.contains(&id))
                    .then(|| (id, (**release).clone(), info.common_env.as_ref().clone()))
            })
            .collect()
    }

    /// The nodes whose agents have a release to run for `job` (to wake
    /// their polls).
    pub fn release_nodes(&self, job: &StreamId) -> Vec<(SharedStr, NodeId)> {
        self.releases_due
            .iter()
            .filter(|(_, jobs)| jobs.contains(job))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Jobs whose preparation ran on a node and whose release has not
    /// ended there.
    pub fn unreleased_on(&self, pool_key: &str, node: &NodeId) -> Vec<StreamId> {
        let mut out: Vec<StreamId> = self
            .jobs
            .iter()
            .filter_map(|(s, j)| {
                let p = j.prep.as_ref()?;
                (&*p.pool_key == pool_key
                    && p.release.is_some()
                    && p.prepared.contains(node)
                    && !p.released.contains(node))
                .then(|| s.clone())
            })
            .collect();
        out.sort();
        out
    }

    /// Tasks to move off nodes where their job's preparation failed.
    pub fn take_prep_requeues(&mut self) -> Vec<HeldTask> {
        std::mem::take(&mut self.prep_requeues)
    }

    /// How many of the pool's nodes refuse the job's tasks because its
    /// preparation failed there (none when no node does).
    pub(super) fn prep_refused(&self, pool_key: &str, job: &StreamId) -> Option<u32> {
        let prep = self.jobs.get(job)?.prep.as_ref()?;
        let pool = self.pools.get(pool_key)?;
        let n = pool
            .nodes
            .iter()
            .filter(|n| prep.refused.contains(*n))
            .count() as u32;
        (n > 0).then_some(n)
    }

    /// Whether `job`'s tasks may go to `node`.
    pub(super) fn prep_allows(&self, job: &JobInfo, node: &NodeId) -> bool {
        job.prep.as_ref().is_none_or(|p| !p.refused.contains(node))
    }

    pub(super) fn preparation_ended(&mut self, job: &StreamId, node: NodeId, succeeded: bool) {
        let Some(info) = self.jobs.get_mut(job) else {
            return;
        };
        let closed = info.state == JobState::Closed;
        let Some(prep) = info.prep.as_mut() else {
            return;
        };
        prep.prepared.insert(node.clone());
        if !succeeded && prep.preparation.wait_for_success {
            prep.refused.insert(node.clone());
            let pool_key = prep.pool_key.clone();
            // Placed there, not started (the agent holds them until the
            // preparation succeeds): placed elsewhere instead.
            let mut moved: Vec<HeldTask> = self
                .holding
                .iter()
                .filter(|(_, h)| {
                    h.pool_key == pool_key
                        && h.node == node
                        && !h.started
                        && h.task.job_stream() == job
                })
                .map(|(s, h)| (s.clone(), h.attempt))
                .collect();
            moved.sort();
            self.prep_requeues.extend(moved);
        }
        if closed {
            self.job_ended(job);
        }
    }

    pub(super) fn release_ended(&mut self, job: &StreamId, node: &NodeId) {
        let Some(prep) = self.jobs.get_mut(job).and_then(|j| j.prep.as_mut()) else {
            return;
        };
        prep.released.insert(node.clone());
        let key = (prep.pool_key.clone(), node.clone());
        if let Some(jobs) = self.releases_due.get_mut(&key) {
            jobs.remove(job);
            if jobs.is_empty() {
                self.releases_due.remove(&key);
            }
        }
    }

    /// The job ended (terminating, completed or deleted): each node where
    /// its preparation ran is to run its release.
    pub(super) fn job_ended(&mut self, job: &StreamId) {
        let Some(prep) = self.jobs.get(job).and_then(|j| j.prep.as_ref()) else {
            return;
        };
        if prep.release.is_none() {
            return;
        }
        for node in prep.prepared.difference(&prep.released) {
            self.releases_due
                .entry((prep.pool_key.clone(), node.clone()))
                .or_default()
                .insert(job.clone());
        }
    }
}
