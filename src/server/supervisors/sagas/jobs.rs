//! The job supervisor: terminating and disabling a job's tasks, wall-clock
//! limits, and completion once the last task ends.

use super::*;
use crate::domain::job::{JobStatus, OnTaskFailure};
use crate::domain::task_spec::{DependencyAction, JobAction};

impl Sagas {
    /// Terminates every unfinished task of a job (running ones are killed
    /// by their agents, which are told at their next poll).
    pub(super) async fn terminate_job_tasks(
        &self,
        job: &StreamId,
        reason: String,
    ) -> Result<(), CoreError> {
        let of = job.clone();
        let (queued, held) = self.placement.inspect(move |s| s.tasks_of_job(&of)).await?;
        let mut first_error = None;
        for stream in queued.into_iter().chain(held.into_iter().map(|(s, _)| s)) {
            let command = TaskCommand::TerminateTask {
                reason: reason.clone(),
            };
            if let Err(e) = self.run::<Task>(&stream, command, "job-supervisor").await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A disabled job's running tasks: requeued, terminated or left to
    /// finish, as the disable asked.
    pub(super) async fn disable_job_tasks(
        &self,
        job: &StreamId,
        how: DisableTasks,
    ) -> Result<(), CoreError> {
        let deallocation = match how {
            DisableTasks::Requeue => Deallocation::Requeue,
            DisableTasks::Terminate => Deallocation::Terminate,
            DisableTasks::Wait => return Ok(()),
        };
        let of = job.clone();
        let (_, held) = self.placement.inspect(move |s| s.tasks_of_job(&of)).await?;
        self.release_tasks(
            held,
            deallocation,
            "its job was disabled".into(),
            "job-supervisor",
        )
        .await
    }

    /// Completes the job if it is due; asks made while a check runs make
    /// one more check after it.
    pub(super) fn complete_job(self: &Rc<Self>, job: StreamId) {
        self.coalesced(
            |s| &s.completing,
            job,
            "completing a job",
            |this, job| async move { this.complete_if_due(&job).await },
        );
    }

    /// The job-completion supervisor: a job whose tasks have all finished,
    /// and that asked to complete then (or is terminating), is completed.
    /// The job's own `completion_due` says whether it is due.
    pub(super) async fn complete_if_due(&self, job: &StreamId) -> Result<(), CoreError> {
        let state = self.core.state::<Job>(job).await?;
        if state.state.completion_due().is_none() {
            return Ok(());
        }
        // Terminating, it completes once every release has ended (each
        // one's record asks again).
        if state.state.status == JobStatus::Terminating
            && !state.state.releases_pending().is_empty()
        {
            return Ok(());
        }
        // A terminated job keeps the reason that ended it (a user, its
        // wall clock, a failed task); only one that ran out of tasks is
        // complete because they all finished.
        let reason = match (state.state.status, state.state.completion_reason) {
            (JobStatus::Terminating, Some(reason)) => reason,
            _ => "all tasks finished".into(),
        };
        let command = JobCommand::CompleteJob { reason };
        self.run::<Job>(job, command, "job-completion").await
    }

    /// A removed node will run no release: each job whose preparation ran
    /// there records its release as failed, so the job can complete.
    pub(super) fn releases_of_removed(self: &Rc<Self>, pool_key: String, node: NodeId) {
        let this = self.clone();
        self.spawn("recording the releases of a removed node", async move {
            let (key, n) = (pool_key.clone(), node.clone());
            let jobs = this
                .placement
                .inspect(move |s| s.unreleased_on(&key, &n))
                .await?;
            for job in jobs {
                let command = JobCommand::RecordRelease {
                    node: node.clone(),
                    status: crate::domain::job_prep::NodeTaskStatus {
                        succeeded: false,
                        exit_code: None,
                        retries: 0,
                        failure: Some("the node was removed before its release ran".into()),
                    },
                };
                this.run::<Job>(&job, command, "job-supervisor").await?;
            }
            Ok(())
        });
    }

    /// Terminates a job when it runs past its maximum wall-clock time.
    /// Arms the job's wall-clock timer at its deadline in placement's
    /// picture (after its creation, or an update that changed its limit).
    pub(super) fn arm_deadline(self: &Rc<Self>, stream: StreamId) {
        let this = self.clone();
        self.spawn("setting a job's wall-clock timer", async move {
            let job = stream.clone();
            let deadline = this
                .placement
                .inspect(move |s| {
                    s.job_deadlines()
                        .into_iter()
                        .find(|(s, _)| s == &job)
                        .map(|(_, d)| d)
                })
                .await?;
            if let Some(deadline) = deadline {
                this.set_deadline(stream, deadline);
            }
            Ok(())
        });
    }

    /// Terminates the job at `deadline` unless a later call moved it (a
    /// timer per job; the newest deadline wins) or its limit is gone.
    pub(super) fn set_deadline(self: &Rc<Self>, job: StreamId, deadline: Timestamp) {
        if self.timers.borrow_mut().insert(job.clone(), deadline) == Some(deadline) {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_local(async move {
            let now = this.core.clock().now();
            let wait = deadline.as_micros().saturating_sub(now.as_micros()).max(0) as u64;
            tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
            {
                let mut timers = this.timers.borrow_mut();
                if timers.get(&job) != Some(&deadline) {
                    return;
                }
                timers.remove(&job);
            }
            let Ok(state) = this.core.state::<Job>(&job).await else {
                return;
            };
            let Some(secs) = state
                .state
                .spec
                .as_ref()
                .and_then(|s| s.max_wall_clock_secs)
            else {
                return;
            };
            let command = JobCommand::TerminateJob {
                reason: format!("the job ran past its maximum wall-clock time of {secs}s"),
            };
            if let Err(e) = this.run::<Job>(&job, command, "job-wall-clock").await {
                tracing::warn!(%job, error = %e, "cannot terminate a job past its wall-clock time");
            }
        });
    }

    /// Notes a new job's manager task when its completion is to complete
    /// the job.
    pub(super) fn learn_manager(&self, envelope: &Envelope) {
        if envelope.event_type != "JobCreated" {
            return;
        }
        let Ok(JobEvent::JobCreated { spec, .. }) =
            decode_event::<JobEvent>(StreamKind::Job, envelope)
        else {
            return;
        };
        if let Some(m) = spec.job_manager.filter(|m| m.kill_job_on_completion) {
            let task = StreamId::task(&spec.account, &spec.id, &m.task.id);
            self.managers
                .borrow_mut()
                .insert(task, envelope.stream.clone());
        }
    }

    /// A job manager's attempt completed: if the task is done for good
    /// (no retry follows), its job completes and its other tasks are
    /// terminated.
    pub(super) fn manager_completed(self: Rc<Self>, task: &StreamId) {
        let Some(job) = self.managers.borrow().get(task).cloned() else {
            return;
        };
        let (this, task) = (self.clone(), task.clone());
        self.spawn("ending a job whose manager completed", async move {
            let state = this.core.state::<Task>(&task).await?.state;
            if state.status != crate::domain::task::TaskStatus::Completed {
                return Ok(());
            }
            this.managers.borrow_mut().remove(&task);
            let command = JobCommand::TerminateJob {
                reason: "job manager complete".into(),
            };
            this.run::<Job>(&job, command, "job-supervisor").await
        });
    }

    /// Acts on each failed task of a job that acts on failures: with
    /// `terminate_job` the job terminates, naming the task; with
    /// `perform_exit_options_job_action` the task's exit conditions say
    /// (terminate by default, disable with requeue, or nothing).
    pub(super) fn terminate_failed_jobs(self: &Rc<Self>) {
        for (job, task, on) in self.unfinished.take_failures() {
            let this = self.clone();
            self.spawn("acting on a task's failure", async move {
                let command = if on == OnTaskFailure::TerminateJob {
                    JobCommand::TerminateJob {
                        reason: format!(
                            "task {task} failed, and the job terminates on a task's failure (--on-task-failure terminate-job)"
                        ),
                    }
                } else {
                    let Some(stream) = job.task_of_job(task.as_str()) else {
                        return Ok(());
                    };
                    let state = this.core.state::<Task>(&stream).await?.state;
                    let (Some(spec), Some(result)) = (state.spec, state.last_result) else {
                        return Ok(());
                    };
                    let outcome = result.outcome();
                    let (action, _) = crate::domain::task_deps::resolve(
                        spec.exit_conditions.as_deref(),
                        outcome,
                        DependencyAction::Block,
                    );
                    let words = crate::server::supervisors::scheduler::deps::outcome_words(
                        outcome,
                        result.failure.as_ref().map(|(c, _)| *c),
                    );
                    match action {
                        JobAction::None => return Ok(()),
                        JobAction::Terminate => JobCommand::TerminateJob {
                            reason: format!(
                                "task {task} failed ({words}) and its exit conditions terminate the job"
                            ),
                        },
                        JobAction::Disable => JobCommand::DisableJob {
                            disable_tasks: crate::domain::job::DisableTasks::Requeue,
                        },
                    }
                };
                this.run::<Job>(&job, command, "job-supervisor").await
            });
        }
    }
}
