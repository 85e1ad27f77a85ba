//! The schedule supervisor: once a second, each live job schedule is asked
//! what is due (`Schedule::due_at`, the rules in the domain), and what it
//! says is done: a run started (recorded first, then its job created and
//! its template's tasks added, each idempotently, so a crash in between is
//! finished on the next tick and never makes a second job), runs skipped
//! or missed, the active jobs of a terminated, replaced or deleted
//! schedule ended, a finished schedule completed.
//!
//! It learns the schedules from placement's feed (the log's history at
//! start, then new events), and reads each one's state from its actor.

use std::collections::BTreeSet;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use super::placement::Feed;
use crate::actors::{Core, CoreError};
use crate::domain::job::{Job, JobCommand, JobStatus};
use crate::domain::schedule::{job_id, Due, Schedule, ScheduleCommand, ScheduleStatus};
use crate::domain::{Ctx, RejectionCode};
use crate::store::{StreamId, StreamKind};
use crate::types::{Principal, RequestId};

/// How often schedules are looked at.
const TICK: Duration = Duration::from_secs(1);

pub struct ScheduleSupervisor {
    core: Core,
    /// Every schedule stream seen in the log.
    known: BTreeSet<StreamId>,
    /// A tick is in progress.
    busy: bool,
    started: bool,
    stop: watch::Receiver<bool>,
}

impl ScheduleSupervisor {
    pub fn new(core: Core, stop: watch::Receiver<bool>) -> Self {
        ScheduleSupervisor {
            core,
            known: BTreeSet::new(),
            busy: false,
            started: false,
            stop,
        }
    }

    fn learn(&mut self, events: &[crate::store::Envelope]) {
        for e in events {
            if e.stream.kind() == StreamKind::Schedule {
                self.known.insert(e.stream.clone());
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let (core, streams) = (self.core.clone(), self.known.clone());
        ctx.spawn(
            async move {
                let mut finished = Vec::new();
                for stream in streams {
                    match step(&core, &stream).await {
                        Ok(true) => finished.push(stream),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(%stream, error = %e, "job schedule step failed"),
                    }
                }
                finished
            }
            .into_actor(self)
            .map(|finished, act, _| {
                for stream in finished {
                    act.known.remove(&stream);
                }
                act.busy = false;
            }),
        );
    }
}

impl Actor for ScheduleSupervisor {
    type Context = Context<Self>;
}

impl Handler<Feed> for ScheduleSupervisor {
    type Result = ();

    fn handle(&mut self, feed: Feed, ctx: &mut Context<Self>) {
        match feed {
            Feed::History(events) | Feed::Live(events) => self.learn(&events),
            Feed::CaughtUp if !self.started => {
                self.started = true;
                let stop = self.stop.clone();
                super::tick_until_stopped(ctx, TICK, &stop, |act: &mut Self, ctx| act.tick(ctx));
            }
            Feed::CaughtUp => {}
        }
    }
}

fn system() -> Ctx {
    Ctx::live(
        &crate::clock::SystemClock,
        Principal::System {
            component: "job schedules".into(),
        },
        RequestId(crate::clock::new_uuid()),
    )
}

/// One look at one schedule; true when it needs no more looks (completed
/// or deleted).
async fn step(core: &Core, stream: &StreamId) -> Result<bool, CoreError> {
    let schedule: Schedule = core.state::<Schedule>(stream).await?.state;
    let Some(spec) = schedule.spec.clone() else {
        return Ok(true);
    };
    match schedule.status {
        ScheduleStatus::Absent | ScheduleStatus::Completed | ScheduleStatus::Deleted => {
            return Ok(true)
        }
        ScheduleStatus::Deleting => {
            for run in 1..schedule.next_run {
                delete_job(core, &spec.account, &job_id(&spec.id, run)).await?;
            }
            ignore_conflict(
                core.execute::<Schedule>(stream, ScheduleCommand::FinishDeletion, system())
                    .await,
            )?;
            return Ok(true);
        }
        ScheduleStatus::Terminating => {
            for run in &schedule.active {
                terminate_job(
                    core,
                    &spec.account,
                    &run.job,
                    "the job schedule was terminated",
                )
                .await?;
            }
        }
        ScheduleStatus::Active | ScheduleStatus::Disabled => {}
    }
    // The active runs: a job or its tasks still to make (a crash after
    // the run was recorded, or between the job and its tasks), or a job
    // that has ended.
    let mut ended = false;
    let has_tasks = !spec.tasks.is_empty() || spec.job.job_manager.is_some();
    for run in &schedule.active {
        let job = core
            .state::<Job>(&StreamId::job(&spec.account, &run.job))
            .await?
            .state;
        let unmade = match job.status {
            JobStatus::Absent => true,
            JobStatus::Active => has_tasks && job.tasks_added == 0,
            _ => false,
        };
        match job.status {
            _ if unmade && schedule.status != ScheduleStatus::Terminating => {
                create_job(core, &schedule, run.run).await?
            }
            JobStatus::Completed | JobStatus::Deleted | JobStatus::Absent => {
                ignore_conflict(
                    core.execute::<Schedule>(
                        stream,
                        ScheduleCommand::RunEnded { run: run.run },
                        system(),
                    )
                    .await,
                )?;
                ended = true;
            }
            _ => {}
        }
    }
    let schedule = match ended {
        true => core.state::<Schedule>(stream).await?.state,
        false => schedule,
    };
    let now = core.clock().now();
    match schedule.due_at(now) {
        Due::Nothing => {}
        Due::Start { run, due, replace } => {
            if replace {
                for active in &schedule.active {
                    let why = format!("replaced by run {run} of job schedule {}", spec.id);
                    terminate_job(core, &spec.account, &active.job, &why).await?;
                }
            }
            start_run(core, stream, run, Some(due)).await?;
        }
        Due::Skip {
            first,
            count,
            due,
            reason,
        } => {
            tracing::info!(%stream, first, count, ?reason, "job schedule runs did not start");
            let skip = ScheduleCommand::SkipRuns {
                first,
                count,
                due,
                reason,
            };
            ignore_conflict(core.execute::<Schedule>(stream, skip, system()).await)?;
        }
        Due::Complete => {
            ignore_conflict(
                core.execute::<Schedule>(stream, ScheduleCommand::Complete, system())
                    .await,
            )?;
        }
    }
    Ok(false)
}

/// Records run `run` as started, then makes its job: the record first, so
/// a crash after it leaves a run whose job the next step creates, and a
/// crash before it a run that is still due.
pub async fn start_run(
    core: &Core,
    stream: &StreamId,
    run: u64,
    due: Option<crate::types::Timestamp>,
) -> Result<(), CoreError> {
    let outcome = core
        .execute::<Schedule>(stream, ScheduleCommand::StartRun { run, due }, system())
        .await?;
    create_job(core, &outcome.state, run).await
}

/// The job of run `run` with its template's tasks, each step skipped when
/// already done (the tasks are added in one atomic append, so either all
/// are there or none).
async fn create_job(core: &Core, schedule: &Schedule, run: u64) -> Result<(), CoreError> {
    let Some(spec) = &schedule.spec else {
        return Ok(());
    };
    let job = spec.job_of_run(run);
    let job_stream = StreamId::job(&spec.account, &job.id);
    // A job with a pool of its own is made with it, in one append.
    let created = if job.auto_pool.is_some() {
        core.create_job_with_tasks(job.clone(), vec![], system(), vec![])
            .await
    } else {
        core.execute::<Job>(
            &job_stream,
            JobCommand::CreateJob { spec: job.clone() },
            system(),
        )
        .await
        .map(|_| ())
    };
    match created {
        Ok(_) => {}
        Err(e) if e.rejection_code() == Some(RejectionCode::JobExists) => {}
        Err(e) => return Err(e),
    }
    if spec.tasks.is_empty() && job.job_manager.is_none() {
        return Ok(());
    }
    if core.state::<Job>(&job_stream).await?.state.tasks_added > 0 {
        return Ok(());
    }
    let slots = core
        .state::<crate::domain::pool::Pool>(&StreamId::pool(&spec.account, &job.pool))
        .await?
        .state
        .spec
        .map_or(1, |p| p.node_size.task_slots);
    let manager = job.manager_task(slots);
    // The manager first, then the template's tasks, in one append.
    let tasks = manager
        .iter()
        .chain(spec.tasks.iter())
        .map(|t| {
            let mut t = t.clone();
            t.env.push(crate::domain::EnvVar {
                name: crate::domain::SCHEDULE_ID_VAR.into(),
                value: spec.id.to_string(),
            });
            t
        })
        .collect();
    match core
        .add_tasks(&spec.account, &job.id, tasks, system(), Vec::new())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.rejection_code() == Some(RejectionCode::TaskExists) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn job_status(
    core: &Core,
    account: &crate::types::AccountName,
    job: &crate::types::JobId,
) -> Result<JobStatus, CoreError> {
    Ok(core
        .state::<Job>(&StreamId::job(account, job))
        .await?
        .state
        .status)
}

async fn terminate_job(
    core: &Core,
    account: &crate::types::AccountName,
    job: &crate::types::JobId,
    reason: &str,
) -> Result<(), CoreError> {
    if !matches!(
        job_status(core, account, job).await?,
        JobStatus::Active | JobStatus::Disabled
    ) {
        return Ok(());
    }
    let terminate = JobCommand::TerminateJob {
        reason: reason.to_string(),
    };
    ignore_conflict(
        core.execute::<Job>(&StreamId::job(account, job), terminate, system())
            .await,
    )
}

async fn delete_job(
    core: &Core,
    account: &crate::types::AccountName,
    job: &crate::types::JobId,
) -> Result<(), CoreError> {
    let stream = StreamId::job(account, job);
    match job_status(core, account, job).await? {
        JobStatus::Absent | JobStatus::Deleted => Ok(()),
        _ => ignore_conflict(
            core.execute::<Job>(&stream, JobCommand::DeleteJob, system())
                .await,
        ),
    }
}

/// A refusal because the state moved meanwhile (another step, a user) is
/// not a failure of the step: the next tick sees the new state.
fn ignore_conflict<T>(result: Result<T, CoreError>) -> Result<(), CoreError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.rejection_code().is_some() => {
            tracing::debug!(error = %e, "job schedule step refused; the next tick sees why");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
