//! Job schedules (the seed's work items): a job template run once or on a
//! recurrence (a fixed interval from an anchor, or a cron expression in an
//! IANA time zone), with Azure's one-active-job rule as the default
//! overlap policy and Kubernetes' skip / replace / allow beside it.
//!
//! Runs are numbered from 1. The schedule's log records each run's fate:
//! started (with its job, `SCHEDULE-job-N`), skipped (overlap), or missed
//! (its start window passed: the server was down, or the schedule was
//! disabled). The next due time follows from the last one recorded, so a
//! restart neither repeats a run nor loses count.

use chrono::TimeZone;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::job::JobSpec;
use super::spec::authorize_account;
use super::task_spec::TaskSpec;
use super::{ensure, validate_display_name, Aggregate, Ctx, DomainEvent, Rejection, RejectionCode};
use crate::store::StreamKind;
use crate::types::{AccountName, JobId, Timestamp};

/// Shortest recurrence a schedule may have unless the server lowers it
/// (Azure's floor).
pub const INTERVAL_SECS_MIN: u64 = 60;
/// Most tasks a schedule's template adds to each job.
pub const TEMPLATE_TASKS_MAX: usize = 1000;
/// Runs kept in a schedule's recent history.
pub const RECENT_RUNS: usize = 10;

/// When a schedule's runs fall due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recurrence {
    /// One run, at `not_before` (or at creation).
    Once,
    /// Every `secs` from the anchor (`not_before`, or creation).
    Every { secs: u64 },
    /// At the times a 5-field cron expression (minute, hour, day of month,
    /// month, day of week) matches in an IANA time zone.
    Cron {
        expression: String,
        time_zone: String,
    },
}

/// What a run that falls due does while the previous run's job is still
/// active.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Wait for it, within the run's start window; past it, skip (Azure).
    #[default]
    Wait,
    /// Skip the new run at once (Kubernetes' Forbid).
    Skip,
    /// Terminate the active job and start the new run.
    Replace,
    /// Start the new run beside it.
    Allow,
}

/// A job schedule as created (or updated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleSpec {
    pub id: JobId,
    pub account: AccountName,
    pub display_name: String,
    pub recurrence: Recurrence,
    /// No run before this; the anchor of a fixed interval.
    pub not_before: Option<Timestamp>,
    /// No run after this; once passed with no active job, the schedule
    /// completes.
    pub not_after: Option<Timestamp>,
    /// How late a run may still start after it fell due; None: until the
    /// next run falls due.
    pub start_window_secs: Option<u64>,
    pub overlap: Overlap,
    /// Every created job is this, with its own id.
    pub job: JobSpec,
    /// Added to every created job.
    pub tasks: Vec<TaskSpec>,
}

impl ScheduleSpec {
    pub fn validate(&self, interval_floor_secs: u64) -> Result<(), Rejection> {
        validate_display_name(&self.display_name)?;
        let bad = |m: String| Rejection::new(RejectionCode::InvalidValue, m);
        match &self.recurrence {
            Recurrence::Once => {}
            Recurrence::Every { secs } => {
                ensure(
                    *secs >= interval_floor_secs,
                    RejectionCode::InvalidValue,
                    || {
                        format!("a schedule recurs at least {interval_floor_secs}s apart; {secs}s asked")
                    },
                )?
            }
            Recurrence::Cron {
                expression,
                time_zone,
            } => {
                cron(expression).map_err(bad)?;
                zone(time_zone).map_err(bad)?;
            }
        }
        if let (Some(a), Some(b)) = (self.not_before, self.not_after) {
            ensure(a < b, RejectionCode::InvalidValue, || {
                "not_after must be later than not_before".into()
            })?;
        }
        if let Some(w) = self.start_window_secs {
            ensure(w >= 1, RejectionCode::InvalidValue, || {
                "a start window is at least 1 second".into()
            })?;
        }
        ensure(
            self.tasks.len() <= TEMPLATE_TASKS_MAX,
            RejectionCode::InvalidValue,
            || format!("a schedule adds at most {TEMPLATE_TASKS_MAX} tasks to each job"),
        )?;
        ensure(
            self.id.as_str().len() <= 48,
            RejectionCode::InvalidValue,
            || "a schedule id is at most 48 characters (its jobs add -job-N)".into(),
        )?;
        let mut ids = std::collections::HashSet::new();
        for t in &self.tasks {
            t.validate()?;
            ensure(ids.insert(&t.id), RejectionCode::InvalidValue, || {
                format!("task {} is in the template twice", t.id)
            })?;
        }
        self.validate_dependencies(&ids)?;
        self.job_of_run(1).validate()
    }

    /// Each job starts empty but for its manager, so a template task's
    /// parents are other template tasks or the manager: checked now, not
    /// at every run.
    fn validate_dependencies(
        &self,
        ids: &std::collections::HashSet<&crate::types::TaskId>,
    ) -> Result<(), Rejection> {
        let Some(t) = self.tasks.iter().find(|t| !t.depends_on.is_empty()) else {
            return Ok(());
        };
        ensure(
            self.job.dependencies.is_some(),
            RejectionCode::DependenciesNotEnabled,
            || {
                format!(
                    "template task {} has parents; give the schedule --dependencies",
                    t.id
                )
            },
        )?;
        let manager = self.job.job_manager.as_ref().map(|m| &m.task.id);
        for t in &self.tasks {
            if let Some(p) = t
                .depends_on
                .task_ids
                .iter()
                .find(|p| !ids.contains(p) && Some(*p) != manager)
            {
                return Err(Rejection::new(
                    RejectionCode::DependencyNotFound,
                    format!(
                        "template task {} depends on {p}, which is not in the template",
                        t.id
                    ),
                ));
            }
        }
        for t in &self.tasks {
            for r in &t.depends_on.ranges {
                let selects = self.tasks.iter().any(|p| r.contains(p.id.as_str()));
                ensure(selects, RejectionCode::DependencyNotFound, || {
                    format!(
                        "template task {} depends on the range {}-{}, which selects no template task",
                        t.id, r.start, r.end
                    )
                })?;
            }
        }
        super::task_deps::order_batch(&self.tasks).map(|_| ())
    }

    /// The first due time at or after `t` (and `not_before`): for a fixed
    /// interval, in step with its anchor.
    pub fn due_at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        let from = self.not_before.map_or(t, |nb| nb.max(t));
        match &self.recurrence {
            Recurrence::Once => Some(from),
            Recurrence::Every { secs } => {
                let anchor = self.not_before.unwrap_or(t).as_micros();
                let step = (*secs as i64).max(1) * 1_000_000;
                let behind = from.as_micros() - anchor;
                let steps = (behind + step - 1).div_euclid(step).max(0);
                Some(Timestamp::from_micros(anchor + steps * step))
            }
            Recurrence::Cron { .. } => self.next_cron(from, true),
        }
        .filter(|t| self.not_after.is_none_or(|end| *t <= end))
    }

    /// The due time of the run after one due at `due`; None when there is
    /// none (one-shot, past `not_after`).
    pub fn next_due(&self, due: Timestamp) -> Option<Timestamp> {
        match &self.recurrence {
            Recurrence::Once => None,
            Recurrence::Every { secs } => Some(Timestamp::from_micros(
                due.as_micros() + (*secs as i64) * 1_000_000,
            )),
            Recurrence::Cron { .. } => self.next_cron(due, false),
        }
        .filter(|t| self.not_after.is_none_or(|end| *t <= end))
    }

    fn next_cron(&self, after: Timestamp, inclusive: bool) -> Option<Timestamp> {
        let Recurrence::Cron {
            expression,
            time_zone,
        } = &self.recurrence
        else {
            return None;
        };
        let (cron, zone) = (cron(expression).ok()?, zone(time_zone).ok()?);
        let local = zone.from_utc_datetime(&after.to_datetime().naive_utc());
        cron.find_next_occurrence(&local, inclusive)
            .ok()
            .map(|t| Timestamp::from_datetime(t.with_timezone(&chrono::Utc)))
    }

    /// The job of run `run`, as created.
    pub fn job_of_run(&self, run: u64) -> JobSpec {
        let mut job = JobSpec {
            id: job_id(&self.id, run),
            account: self.account.clone(),
            ..self.job.clone()
        };
        // Each run's job gets a pool of its own, under its own id.
        job.bind_auto_pool();
        job
    }
}

/// A run's job id: `SCHEDULE-job-N`.
pub fn job_id(schedule: &JobId, run: u64) -> JobId {
    JobId::new(format!("{schedule}-job-{run}")).unwrap_or_else(|_| schedule.clone())
}

fn cron(expression: &str) -> Result<croner::Cron, String> {
    if expression.split_whitespace().count() != 5 {
        return Err(format!(
            "cron expression {expression:?} needs 5 fields: minute hour day-of-month month day-of-week"
        ));
    }
    croner::Cron::new(expression)
        .parse()
        .map_err(|e| format!("cron expression {expression:?}: {e}"))
}

fn zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        format!("{name:?} is not an IANA time zone (like Europe/Madrid, America/New_York or UTC)")
    })
}

/// Why a run did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The previous run's job was still active (overlap skip, or wait past
    /// the start window).
    PreviousJobActive,
    /// Its start window passed before it could start (the server was down
    /// or busy).
    StartWindowPassed,
    /// The schedule was disabled when it fell due.
    Disabled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ScheduleCommand {
    Create {
        spec: ScheduleSpec,
        interval_floor_secs: u64,
    },
    /// New template and timing for runs to come; the active job keeps its.
    Update {
        spec: ScheduleSpec,
        interval_floor_secs: u64,
    },
    Disable,
    Enable,
    /// Ends the schedule: no more runs; its active job is terminated.
    Terminate,
    Delete,
    /// The schedule supervisor starting run `run` (due at `due`; None: run
    /// now, outside the recurrence).
    StartRun {
        run: u64,
        due: Option<Timestamp>,
    },
    /// Runs `first..first + count` did not start.
    SkipRuns {
        first: u64,
        count: u64,
        due: Timestamp,
        reason: SkipReason,
    },
    /// A run's job ended (the supervisor saw it).
    RunEnded {
        run: u64,
    },
    /// No run is left and no job is active.
    Complete,
    /// Every job of a deleting schedule is gone.
    FinishDeletion,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ScheduleEvent {
    ScheduleCreated {
        spec: ScheduleSpec,
        at: Timestamp,
    },
    ScheduleUpdated {
        spec: ScheduleSpec,
        at: Timestamp,
    },
    ScheduleDisabled {
        at: Timestamp,
    },
    ScheduleEnabled {
        at: Timestamp,
    },
    ScheduleTerminating {
        at: Timestamp,
    },
    ScheduleCompleted {
        at: Timestamp,
    },
    ScheduleDeleting {
        at: Timestamp,
    },
    ScheduleRunStarted {
        run: u64,
        job: JobId,
        /// None: started by hand (`run-now`), outside the recurrence.
        due: Option<Timestamp>,
        at: Timestamp,
    },
    ScheduleRunsSkipped {
        first: u64,
        count: u64,
        due: Timestamp,
        reason: SkipReason,
        at: Timestamp,
    },
    ScheduleRunEnded {
        run: u64,
        at: Timestamp,
    },
    ScheduleDeleted {
        at: Timestamp,
    },
}

impl DomainEvent for ScheduleEvent {
    const KIND: crate::store::StreamKind = crate::store::StreamKind::Schedule;
    fn event_type(&self) -> &'static str {
        match self {
            ScheduleEvent::ScheduleCreated { .. } => "ScheduleCreated",
            ScheduleEvent::ScheduleUpdated { .. } => "ScheduleUpdated",
            ScheduleEvent::ScheduleDisabled { .. } => "ScheduleDisabled",
            ScheduleEvent::ScheduleEnabled { .. } => "ScheduleEnabled",
            ScheduleEvent::ScheduleTerminating { .. } => "ScheduleTerminating",
            ScheduleEvent::ScheduleCompleted { .. } => "ScheduleCompleted",
            ScheduleEvent::ScheduleDeleting { .. } => "ScheduleDeleting",
            ScheduleEvent::ScheduleRunStarted { .. } => "ScheduleRunStarted",
            ScheduleEvent::ScheduleRunsSkipped { .. } => "ScheduleRunsSkipped",
            ScheduleEvent::ScheduleRunEnded { .. } => "ScheduleRunEnded",
            ScheduleEvent::ScheduleDeleted { .. } => "ScheduleDeleted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    #[default]
    Absent,
    Active,
    Disabled,
    Terminating,
    Completed,
    Deleting,
    Deleted,
}

/// One run of a schedule that started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunRecord {
    pub run: u64,
    pub job: JobId,
    pub due: Option<Timestamp>,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Schedule {
    pub status: ScheduleStatus,
    pub spec: Option<ScheduleSpec>,
    pub created_at: Option<Timestamp>,
    /// The next run's number and due time (None: no run left).
    pub next_run: u64,
    pub next_due: Option<Timestamp>,
    /// Runs whose jobs have not ended, oldest first.
    pub active: Vec<RunRecord>,
    /// The latest runs that started, newest last.
    pub recent: Vec<RunRecord>,
    /// Runs that did not start, by reason.
    pub skipped_previous_active: u64,
    pub missed_start_window: u64,
    pub skipped_disabled: u64,
    pub runs_started: u64,
}

impl Schedule {
    fn live(&self, ctx: &Ctx) -> Result<&ScheduleSpec, Rejection> {
        let spec = match (&self.status, &self.spec) {
            (ScheduleStatus::Absent | ScheduleStatus::Deleted, _) | (_, None) => {
                return Err(Rejection::new(
                    RejectionCode::ScheduleNotFound,
                    "no such job schedule",
                ))
            }
            (_, Some(spec)) => spec,
        };
        authorize_account(
            &ctx.principal,
            &spec.account,
            RejectionCode::ScheduleNotFound,
        )?;
        Ok(spec)
    }

    fn conflict(&self, what: &str) -> Rejection {
        Rejection::new(
            RejectionCode::ScheduleStateConflict,
            format!("the schedule is {:?}; {what}", self.status).to_lowercase(),
        )
    }

    /// Whether it may start runs: active (or a run by hand while disabled).
    fn running(&self) -> bool {
        matches!(
            self.status,
            ScheduleStatus::Active | ScheduleStatus::Disabled
        )
    }
}

impl Schedule {
    /// What the supervisor records of a run: started, skipped, ended.
    fn decide_run(
        &self,
        command: &ScheduleCommand,
        ctx: &Ctx,
    ) -> Result<Vec<ScheduleEvent>, Rejection> {
        let at = ctx.now;
        use ScheduleCommand as C;
        use ScheduleEvent as E;
        match command {
            C::StartRun { run, due } => {
                let spec = self.live(ctx)?;
                ensure(self.running(), RejectionCode::ScheduleStateConflict, || {
                    self.conflict("it starts no more runs").detail
                })?;
                ensure(
                    *run == self.next_run,
                    RejectionCode::ScheduleStateConflict,
                    || format!("run {run} is not the schedule's next ({})", self.next_run),
                )?;
                Ok(vec![E::ScheduleRunStarted {
                    run: *run,
                    job: job_id(&spec.id, *run),
                    due: *due,
                    at,
                }])
            }
            C::SkipRuns {
                first,
                count,
                due,
                reason,
            } => {
                self.live(ctx)?;
                ensure(
                    *first == self.next_run && *count >= 1,
                    RejectionCode::ScheduleStateConflict,
                    || format!("run {first} is not the schedule's next ({})", self.next_run),
                )?;
                Ok(vec![E::ScheduleRunsSkipped {
                    first: *first,
                    count: *count,
                    due: *due,
                    reason: *reason,
                    at,
                }])
            }
            C::RunEnded { run } => {
                self.live(ctx)?;
                ensure(
                    self.active.iter().any(|r| r.run == *run),
                    RejectionCode::ScheduleStateConflict,
                    || format!("run {run} is not active"),
                )?;
                Ok(vec![E::ScheduleRunEnded { run: *run, at }])
            }
            _ => Err(Rejection::new(
                RejectionCode::InvalidValue,
                "not a run command",
            )),
        }
    }
}

impl Aggregate for Schedule {
    type Command = ScheduleCommand;
    type Event = ScheduleEvent;
    const KIND: StreamKind = StreamKind::Schedule;
    const STATE_SCHEMA: u32 = 2;

    fn decide(
        &self,
        command: &ScheduleCommand,
        ctx: &Ctx,
    ) -> Result<Vec<ScheduleEvent>, Rejection> {
        let at = ctx.now;
        use ScheduleCommand as C;
        use ScheduleEvent as E;
        match command {
            C::Create {
                spec,
                interval_floor_secs,
            } => {
                authorize_account(
                    &ctx.principal,
                    &spec.account,
                    RejectionCode::PermissionDenied,
                )?;
                ensure(
                    matches!(
                        self.status,
                        ScheduleStatus::Absent | ScheduleStatus::Deleted
                    ),
                    RejectionCode::ScheduleExists,
                    || format!("job schedule {} exists", spec.id),
                )?;
                spec.validate(*interval_floor_secs)?;
                Ok(vec![E::ScheduleCreated {
                    spec: spec.clone(),
                    at,
                }])
            }
            C::Update {
                spec,
                interval_floor_secs,
            } => {
                let old = self.live(ctx)?;
                ensure(self.running(), RejectionCode::ScheduleStateConflict, || {
                    self.conflict("only an active or disabled schedule is updated")
                        .detail
                })?;
                ensure(
                    spec.id == old.id && spec.account == old.account,
                    RejectionCode::InvalidValue,
                    || "an update keeps the schedule's id".into(),
                )?;
                spec.validate(*interval_floor_secs)?;
                Ok(vec![E::ScheduleUpdated {
                    spec: spec.clone(),
                    at,
                }])
            }
            C::Disable => {
                self.live(ctx)?;
                match self.status {
                    ScheduleStatus::Active => Ok(vec![E::ScheduleDisabled { at }]),
                    _ => Err(self.conflict("only an active schedule is disabled")),
                }
            }
            C::Enable => {
                self.live(ctx)?;
                match self.status {
                    ScheduleStatus::Disabled => Ok(vec![E::ScheduleEnabled { at }]),
                    _ => Err(self.conflict("only a disabled schedule is enabled")),
                }
            }
            C::Terminate => {
                self.live(ctx)?;
                ensure(self.running(), RejectionCode::ScheduleStateConflict, || {
                    self.conflict("it has ended already").detail
                })?;
                Ok(vec![E::ScheduleTerminating { at }])
            }
            C::Delete => {
                self.live(ctx)?;
                ensure(
                    self.status != ScheduleStatus::Deleting,
                    RejectionCode::ScheduleStateConflict,
                    || "the schedule is being deleted".into(),
                )?;
                Ok(vec![E::ScheduleDeleting { at }])
            }
            C::StartRun { .. } | C::SkipRuns { .. } | C::RunEnded { .. } => {
                self.decide_run(command, ctx)
            }
            C::FinishDeletion => {
                self.live(ctx)?;
                ensure(
                    self.status == ScheduleStatus::Deleting,
                    RejectionCode::ScheduleStateConflict,
                    || "the schedule is not being deleted".into(),
                )?;
                Ok(vec![E::ScheduleDeleted { at }])
            }
            C::Complete => {
                self.live(ctx)?;
                ensure(
                    matches!(
                        self.status,
                        ScheduleStatus::Active
                            | ScheduleStatus::Disabled
                            | ScheduleStatus::Terminating
                    ) && self.active.is_empty(),
                    RejectionCode::ScheduleStateConflict,
                    || self.conflict("it completes with no active job").detail,
                )?;
                Ok(vec![E::ScheduleCompleted { at }])
            }
        }
    }

    fn is_finished(&self) -> bool {
        // A deleting schedule still has its jobs deleted by the supervisor.
        matches!(
            self.status,
            ScheduleStatus::Completed | ScheduleStatus::Deleted
        )
    }

    fn apply(&mut self, event: &ScheduleEvent) {
        use ScheduleEvent as E;
        match event {
            E::ScheduleCreated { spec, at } => {
                *self = Schedule {
                    status: ScheduleStatus::Active,
                    created_at: Some(*at),
                    next_run: 1,
                    // The first run: at `not_before` or creation (for cron,
                    // the first match at or after it).
                    next_due: spec.due_at_or_after(*at),
                    spec: Some(spec.clone()),
                    ..Schedule::default()
                };
            }
            E::ScheduleUpdated { spec, at } => {
                // Runs to come follow the new timing, from the update on.
                self.next_due = match spec.recurrence {
                    Recurrence::Once if self.runs_started > 0 => None,
                    _ => spec.due_at_or_after(*at),
                };
                self.spec = Some(spec.clone());
            }
            E::ScheduleDisabled { .. } => self.status = ScheduleStatus::Disabled,
            E::ScheduleEnabled { .. } => self.status = ScheduleStatus::Active,
            E::ScheduleTerminating { .. } => {
                self.status = ScheduleStatus::Terminating;
                self.next_due = None;
            }
            E::ScheduleCompleted { .. } => {
                self.status = ScheduleStatus::Completed;
                self.next_due = None;
            }
            E::ScheduleDeleting { .. } => {
                self.status = ScheduleStatus::Deleting;
                self.next_due = None;
            }
            E::ScheduleRunStarted { run, job, due, at } => {
                let record = RunRecord {
                    run: *run,
                    job: job.clone(),
                    due: *due,
                    started: *at,
                    ended: None,
                };
                self.active.push(record.clone());
                self.recent.push(record);
                if self.recent.len() > RECENT_RUNS {
                    self.recent.remove(0);
                }
                self.runs_started += 1;
                if let (Some(due), Some(spec)) = (due, &self.spec) {
                    self.next_run = run + 1;
                    self.next_due = spec.next_due(*due);
                } else {
                    // By hand: the recurrence keeps its next run, which
                    // takes the number after this one.
                    self.next_run = self.next_run.max(run + 1);
                }
            }
            E::ScheduleRunsSkipped {
                first,
                count,
                due,
                reason,
                ..
            } => {
                match reason {
                    SkipReason::PreviousJobActive => self.skipped_previous_active += count,
                    SkipReason::StartWindowPassed => self.missed_start_window += count,
                    SkipReason::Disabled => self.skipped_disabled += count,
                }
                self.next_run = first + count;
                self.next_due = self.spec.as_ref().and_then(|s| s.next_due(*due));
            }
            E::ScheduleDeleted { .. } => {
                self.status = ScheduleStatus::Deleted;
                self.active.clear();
            }
            E::ScheduleRunEnded { run, at } => {
                self.active.retain(|r| r.run != *run);
                if let Some(r) = self.recent.iter_mut().find(|r| r.run == *run) {
                    r.ended = Some(*at);
                }
            }
        }
    }
}

/// What the schedule supervisor does about a schedule at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet (not due, or waiting for the previous job).
    Nothing,
    /// Start the next run, after terminating the active jobs when
    /// `replace`.
    Start {
        run: u64,
        due: Timestamp,
        replace: bool,
    },
    /// Record runs that did not start.
    Skip {
        first: u64,
        count: u64,
        due: Timestamp,
        reason: SkipReason,
    },
    /// No run is left and no job is active: the schedule completes.
    Complete,
}

impl Schedule {
    /// The decision for `now`, the rules in one place: a run that fell due
    /// starts within its start window, unless the schedule is disabled
    /// (skipped) or a previous job is active (the overlap policy); runs
    /// whose windows all passed while nothing could start are recorded as
    /// missed in one event, except the latest, which may still start.
    pub fn due_at(&self, now: Timestamp) -> Due {
        let Some(spec) = &self.spec else {
            return Due::Nothing;
        };
        let Some(due) = self.next_due else {
            let done = matches!(
                self.status,
                ScheduleStatus::Active | ScheduleStatus::Disabled | ScheduleStatus::Terminating
            ) && self.active.is_empty();
            return if done { Due::Complete } else { Due::Nothing };
        };
        if !self.running() || now < due {
            return Due::Nothing;
        }
        // Runs due since, beyond the next one: all missed but the latest.
        // `last_missed` is the due time of the last of them, which the skip
        // event ends at so that the next due time is the latest's.
        let (mut latest, mut last_missed) = (due, due);
        let mut missed = 0u64;
        while let Some(next) = spec.next_due(latest) {
            if next > now || missed > 1_000_000 {
                break;
            }
            missed += 1;
            last_missed = latest;
            latest = next;
        }
        if missed > 0 {
            return Due::Skip {
                first: self.next_run,
                count: missed,
                due: last_missed,
                reason: if self.status == ScheduleStatus::Disabled {
                    SkipReason::Disabled
                } else if !self.active.is_empty() {
                    SkipReason::PreviousJobActive
                } else {
                    SkipReason::StartWindowPassed
                },
            };
        }
        let window = spec.start_window_secs.map(|s| s as i64 * 1_000_000);
        let window_passed = window.is_some_and(|w| now.as_micros() > due.as_micros() + w);
        let skip = |reason| Due::Skip {
            first: self.next_run,
            count: 1,
            due,
            reason,
        };
        if self.status == ScheduleStatus::Disabled {
            return skip(SkipReason::Disabled);
        }
        if window_passed {
            return skip(if self.active.is_empty() {
                SkipReason::StartWindowPassed
            } else {
                SkipReason::PreviousJobActive
            });
        }
        if self.active.is_empty() {
            return Due::Start {
                run: self.next_run,
                due,
                replace: false,
            };
        }
        match spec.overlap {
            Overlap::Wait => Due::Nothing,
            Overlap::Skip => skip(SkipReason::PreviousJobActive),
            Overlap::Replace => Due::Start {
                run: self.next_run,
                due,
                replace: true,
            },
            Overlap::Allow => Due::Start {
                run: self.next_run,
                due,
                replace: false,
            },
        }
    }
}

#[cfg(test)]
mod tests;
