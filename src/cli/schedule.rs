//! `lote schedule`: job schedules (the seed's work items), a job template
//! run once, every so often, or by cron in a time zone.

use clap::Subcommand;

use super::render::render;
use super::{placeholder_account, Rendered};
use lote::api::Request;
use lote::client::{Client, ClientError};
use lote::domain::job::{JobSpec, OnAllTasksComplete, OnTaskFailure};
use lote::domain::schedule::{Overlap, Recurrence, ScheduleSpec};
use lote::types::{JobId, PoolId, Timestamp};

/// When and how a schedule's jobs are made (create and update).
#[derive(clap::Args, Debug, Clone)]
pub struct ScheduleArgs {
    pub id: JobId,
    /// The pool every job runs on...
    #[arg(long, required_unless_present = "auto_pool")]
    pool: Option<PoolId>,
    /// ...or a pool made for each run's job, under its id, and deleted
    /// when it ends: nodes=N,slots=S[,cores=C,memory-mib=M,keep-alive].
    #[arg(long, conflicts_with = "pool", value_name = "nodes=N,slots=S")]
    auto_pool: Option<String>,
    /// A run every DURATION (90s, 15m, 2h, 1d) from --not-before or now.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = duration_secs,
        conflicts_with_all = ["cron", "once"],
        required_unless_present_any = ["cron", "once"]
    )]
    every: Option<u64>,
    /// A run whenever this 5-field cron expression (minute hour
    /// day-of-month month day-of-week) matches, in --time-zone. A time
    /// skipped by a daylight-saving jump runs right after it; a time that
    /// repeats runs once.
    #[arg(long, value_name = "EXPR", conflicts_with = "once")]
    cron: Option<String>,
    /// The IANA time zone of --cron (Europe/Madrid, America/New_York).
    #[arg(long, value_name = "ZONE", default_value = "UTC", requires = "cron")]
    time_zone: String,
    /// One run, at --not-before or now.
    #[arg(long)]
    once: bool,
    /// No run before this time (RFC 3339); the anchor of --every.
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    not_before: Option<Timestamp>,
    /// No run after this time (RFC 3339); the schedule then completes.
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    not_after: Option<Timestamp>,
    /// How late a run may still start (DURATION); a later one is recorded
    /// as missed. [default: until the next run falls due]
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    start_window: Option<u64>,
    /// When a run falls due while the previous job is active: wait (for it,
    /// within the start window), skip, replace (terminate it), allow.
    #[arg(long, value_enum, default_value = "wait")]
    overlap: Overlap,
    /// Each job's priority, -1000 to 1000.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    #[arg(long, default_value_t = 0)]
    max_task_retries: u32,
    /// Longest each job may run, seconds.
    #[arg(long)]
    max_wall_clock_secs: Option<u64>,
    /// What a job does when its tasks are all done. Unlike `job create`,
    /// terminate-job by default: a job that never ends holds the next run
    /// back (--overlap wait).
    #[arg(long, value_enum, default_value = "terminate-job")]
    on_all_tasks_complete: OnAllTasksComplete,
    #[arg(long, value_enum, default_value = "no-action")]
    on_task_failure: OnTaskFailure,
    /// The tasks every job gets, as `task add-many` reads them (JSON
    /// Lines: {"id": "t1", "command": "..."} per line).
    #[arg(long, value_name = "FILE")]
    tasks_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    manager: super::job::JobManagerArgs,
    #[command(flatten)]
    dependencies: super::deps::JobDependencyArgs,
    #[command(flatten)]
    prep: super::job_prep::JobPrepArgs,
    #[command(flatten)]
    common: super::job_prep::JobEnvArgs,
}

impl ScheduleArgs {
    fn spec(&self) -> Result<ScheduleSpec, ClientError> {
        let (common_env, metadata) = self.common.specs().map_err(|e| {
            ClientError::Api(lote::api::ApiError::rejected(
                lote::domain::RejectionCode::InvalidValue,
                e,
            ))
        })?;
        let recurrence = match (&self.every, &self.cron, self.once) {
            (Some(secs), _, _) => Recurrence::Every { secs: *secs },
            (_, Some(expression), _) => Recurrence::Cron {
                expression: expression.clone(),
                time_zone: self.time_zone.clone(),
            },
            _ => Recurrence::Once,
        };
        let tasks = match &self.tasks_file {
            Some(path) => super::task::read_task_lines(path)?,
            None => Vec::new(),
        };
        let auto_pool = self
            .auto_pool
            .as_deref()
            .map(super::app::auto_pool_arg)
            .transpose()?
            .map(Box::new);
        // With an auto pool, each run's job takes its own id as its pool's.
        let pool = super::app::pool_or_own(self.pool.clone(), &self.id);
        Ok(ScheduleSpec {
            id: self.id.clone(),
            // The server puts the caller's account in.
            account: placeholder_account(),
            display_name: String::new(),
            recurrence,
            not_before: self.not_before,
            not_after: self.not_after,
            start_window_secs: self.start_window,
            overlap: self.overlap,
            job: JobSpec {
                priority: self.priority,
                max_task_retries: self.max_task_retries,
                max_wall_clock_secs: self.max_wall_clock_secs,
                on_all_tasks_complete: self.on_all_tasks_complete,
                on_task_failure: self.on_task_failure,
                job_manager: self.manager.spec(),
                dependencies: self.dependencies.spec(),
                preparation: self.prep.specs().0,
                release: self.prep.specs().1,
                common_env,
                metadata,
                auto_pool,
                ..JobSpec::on_pool(self.id.clone(), placeholder_account(), pool)
            },
            tasks,
        })
    }
}

fn rfc3339(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time (like 2026-12-24T18:00:00Z): {e}"))
}

/// `90`, `90s`, `15m`, `2h`, `1d`: seconds.
fn duration_secs(text: &str) -> Result<u64, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 90s, 15m, 2h, 1d)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(scale)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?} is not a usable duration"))
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// Create a schedule: its jobs are SCHEDULE-job-1, -2, ...
    ///
    /// Examples:
    ///   lote schedule create nightly --pool render --cron '0 2 * * *' --time-zone Europe/Madrid --tasks-file frames.jsonl
    ///   lote schedule create poll --pool small --every 15m --overlap skip --tasks-file poll.jsonl
    ///   lote schedule create once --pool render --once --not-before 2026-12-24T18:00:00Z
    #[command(verbatim_doc_comment)]
    Create {
        #[command(flatten)]
        args: ScheduleArgs,
        #[arg(long)]
        request_id: Option<uuid::Uuid>,
    },
    /// Replace a schedule's timing and template: runs to come use them; the
    /// active job keeps its own.
    Update {
        #[command(flatten)]
        args: ScheduleArgs,
    },
    /// The account's schedules: state, next run, runs started and skipped.
    List,
    /// One schedule: state, next run, recent jobs and what they did, skipped
    /// and missed runs.
    Show {
        id: JobId,
    },
    /// Start no runs until enabled (runs falling due meanwhile are recorded
    /// as skipped); an active job runs on.
    Disable {
        id: JobId,
    },
    Enable {
        id: JobId,
    },
    /// End the schedule: no more runs, its active job terminated.
    Terminate {
        id: JobId,
    },
    /// Delete the schedule and every job it made.
    Delete {
        id: JobId,
    },
    /// Start one run now, outside the recurrence (its own job number).
    RunNow {
        id: JobId,
    },
}

pub(super) async fn run(cmd: ScheduleCmd, client: &Client) -> Result<Rendered, ClientError> {
    let request = match cmd {
        ScheduleCmd::Create { args, request_id } => Request::CreateSchedule {
            spec: args.spec()?,
            request_id,
        },
        ScheduleCmd::Update { args } => Request::UpdateSchedule { spec: args.spec()? },
        ScheduleCmd::List => Request::ListSchedules,
        ScheduleCmd::Show { id } => Request::ShowSchedule { schedule: id },
        ScheduleCmd::Disable { id } => Request::DisableSchedule { schedule: id },
        ScheduleCmd::Enable { id } => Request::EnableSchedule { schedule: id },
        ScheduleCmd::Terminate { id } => Request::TerminateSchedule { schedule: id },
        ScheduleCmd::Delete { id } => Request::DeleteSchedule { schedule: id },
        ScheduleCmd::RunNow { id } => Request::RunScheduleNow { schedule: id },
    };
    Ok(Some(render(client.call(&request).await?)))
}

#[cfg(test)]
mod tests {
    use super::duration_secs;

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(duration_secs("90"), Ok(90));
        assert_eq!(duration_secs("90s"), Ok(90));
        assert_eq!(duration_secs("15m"), Ok(900));
        assert_eq!(duration_secs("2h"), Ok(7200));
        assert_eq!(duration_secs("1d"), Ok(86_400));
        assert!(duration_secs("0s").is_err());
        assert!(duration_secs("5w").is_err());
        assert!(duration_secs("m").is_err());
    }
}
